"""Training data, offline by default: byte-level text for the GPT, 8x8 digits for the ViT.

Text sources become two flat token streams (train, validation) cached as .bin files: by default
one byte per token (vocabulary 256), documents joined with a 0 byte; `data.tokenizer` encodes
them with a BPE instead (`tokenize.py`). The split is by file: a
file goes to validation when a stable hash (SHA-256) of its relative path falls below
`val_fraction`, so it does not move when other files are added. A single text file is split by
position instead (its last `val_fraction` of bytes).

Training batches are random windows (text) or random examples (digits) drawn with a
`torch.Generator` that the caller owns and checkpoints, so a resumed run sees the same batches.
Validation batches are a fixed set drawn from a constant seed: every evaluation of every arm
scores the same examples.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from normlab.bench import tokenize
from normlab.bench.config import DataConfig

FORMAT_VERSION = 1
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
VAL_SEED = 1234
Batch = tuple[torch.Tensor, torch.Tensor]


def in_validation(key: str, val_fraction: float) -> bool:
    """True when `key` (a relative path or row id) belongs to the validation split."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def default_cache_dir() -> Path:
    if os.environ.get("NORMLAB_CACHE"):
        return Path(os.environ["NORMLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "normlab"


def stdlib_files() -> list[tuple[str, Path]]:
    """The standard library's .py files as (relative path, path), sorted, tests excluded."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]  # prune: never walk into them
        for name in names:
            path = Path(folder) / name
            if name.endswith(".py") and path.is_file():
                files.append((path.relative_to(root).as_posix(), path))
    return sorted(files)


def folder_files(folder: Path, pattern: str) -> list[tuple[str, Path]]:
    files = [(p.relative_to(folder).as_posix(), p) for p in folder.glob(pattern) if p.is_file()]
    if not files:
        raise ValueError(f"data.path {str(folder)!r} has no files matching data.glob {pattern!r}")
    return sorted(files)


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


@dataclass
class TextCorpus:
    """Train and validation byte streams (memory-mapped) and what they were made from."""

    train: np.ndarray
    val: np.ndarray
    meta: dict


def _cached(cache: Path, key: str, build) -> TextCorpus:
    """Load `key` from the cache, building it with `build() -> (train, val, meta)` if absent."""
    cache.mkdir(parents=True, exist_ok=True)
    train_bin, val_bin = cache / f"{key}.train.bin", cache / f"{key}.val.bin"
    meta_json = cache / f"{key}.json"
    if not meta_json.is_file():
        train, val, meta = build()
        if not train or not val:
            raise ValueError(f"the {meta['source']} corpus has an empty split "
                             f"({len(train)} train / {len(val)} validation bytes); "
                             "change data.val_fraction or add files")
        _write_atomic(train_bin, train)
        _write_atomic(val_bin, val)
        meta.update(train_bytes=len(train), val_bytes=len(val))
        _write_atomic(meta_json, json.dumps(meta, indent=2).encode())
    meta = json.loads(meta_json.read_text())
    return TextCorpus(np.memmap(train_bin, dtype=np.uint8, mode="r"),
                      np.memmap(val_bin, dtype=np.uint8, mode="r"), meta)


def _split_files(files: list[tuple[str, Path]], val_fraction: float, source: str):
    def build():
        parts: dict[bool, list[bytes]] = {False: [], True: []}
        for rel, path in files:
            parts[in_validation(rel, val_fraction)].append(path.read_bytes())
        meta = {"source": source, "train_files": len(parts[False]), "val_files": len(parts[True])}
        return b"\0".join(parts[False]), b"\0".join(parts[True]), meta
    return build


def _fingerprint(*items: object) -> str:
    return hashlib.sha256(json.dumps([FORMAT_VERSION, *items]).encode()).hexdigest()[:16]


def _file_list_key(files: list[tuple[str, Path]]) -> list:
    return [(rel, p.stat().st_size, p.stat().st_mtime_ns) for rel, p in files]


def load_text(cfg: DataConfig) -> TextCorpus:
    """The train/validation token streams of a text source, built once and cached: its bytes,
    tokenized as `data.tokenizer` says (`normlab.bench.tokenize`)."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    key, build = _byte_source(cfg)
    corpus = _cached(cache, key, build)
    if cfg.tokenizer == tokenize.BYTES:
        return corpus
    return _tokenized(cfg, cache, key, corpus)


def _byte_source(cfg: DataConfig):
    """(cache key, build) of the byte streams of `cfg`'s text source."""
    if cfg.source == "stdlib":
        files = stdlib_files()
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        key = f"stdlib-py{version}-" + _fingerprint(_file_list_key(files), cfg.val_fraction)
        return key, _split_files(files, cfg.val_fraction, f"stdlib-py{version}")
    if cfg.source == "path":
        root = Path(cfg.path).expanduser().resolve()
        if root.is_dir():
            files = folder_files(root, cfg.glob)
            key = "path-" + _fingerprint(str(root), _file_list_key(files), cfg.val_fraction)
            return key, _split_files(files, cfg.val_fraction, str(root))
        if not root.is_file():
            raise ValueError(f"data.path {cfg.path!r} is neither a file nor a folder")
        key = "file-" + _fingerprint(str(root), _file_list_key([("", root)]), cfg.val_fraction)

        def build_file():
            data = root.read_bytes()
            cut = int(len(data) * (1.0 - cfg.val_fraction))
            return data[:cut], data[cut:], {"source": str(root), "train_files": 1, "val_files": 1}
        return key, build_file
    if cfg.source == "hf":
        key = "hf-" + _fingerprint(cfg.hf_name, cfg.hf_config, cfg.hf_split, cfg.text_field,
                                   cfg.val_fraction)
        return key, lambda: _build_hf(cfg)
    raise ValueError(f"data.source {cfg.source!r} is not a text source")


def _tokenized(cfg: DataConfig, cache: Path, key: str, corpus: TextCorpus) -> TextCorpus:
    """`corpus` encoded with `cfg.tokenizer`, cached under `key` and the tokenizer's
    fingerprint (a trained BPE is kept there too, as `<key>-bpe<V>.tokenizer.json`)."""
    tokens = f"{key}-{tokenize.fingerprint(cfg)}"
    meta_json = cache / f"{tokens}.json"
    if not meta_json.is_file():
        train, val = bytes(corpus.train), bytes(corpus.val)
        tokenizer = tokenize.load(cfg, train, cache / f"{tokens}.tokenizer.json")
        ids = {split: tokenize.encode(tokenizer, stream)
               for split, stream in (("train", train), ("val", val))}
        for split, array in ids.items():
            _write_atomic(cache / f"{tokens}.{split}.bin", array.tobytes())
        meta = {**corpus.meta, "tokenizer": cfg.tokenizer, "dtype": str(ids["train"].dtype),
                "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
                "train_tokens": len(ids["train"]), "val_tokens": len(ids["val"])}
        _write_atomic(meta_json, json.dumps(meta, indent=2).encode())
    meta = json.loads(meta_json.read_text())
    return TextCorpus(*(np.memmap(cache / f"{tokens}.{split}.bin", dtype=meta["dtype"], mode="r")
                        for split in ("train", "val")), meta)


def _build_hf(cfg: DataConfig):
    try:
        import datasets
    except ImportError:
        raise ValueError("data.source 'hf' needs the HuggingFace `datasets` package "
                         "(pip install datasets); or use data.source=stdlib or path") from None
    try:
        rows = datasets.load_dataset(cfg.hf_name, cfg.hf_config, split=cfg.hf_split)
    except Exception as error:
        raise ValueError(f"could not load the HuggingFace dataset {cfg.hf_name!r} "
                         f"(split {cfg.hf_split!r}): {error}. The first load needs network "
                         "access; later loads use the local HuggingFace cache.") from error
    if cfg.text_field not in rows.column_names:
        raise ValueError(f"data.text_field {cfg.text_field!r} is not a column of "
                         f"{cfg.hf_name!r}; columns: {rows.column_names}")
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    for i, text in enumerate(rows[cfg.text_field]):
        parts[in_validation(f"{cfg.hf_name}/{i}", cfg.val_fraction)].append(text.encode())
    meta = {"source": f"hf:{cfg.hf_name}", "train_files": len(parts[False]),
            "val_files": len(parts[True])}
    return b"\0".join(parts[False]), b"\0".join(parts[True]), meta


class TextData:
    """Language-modelling batches: inputs (B, T) and next-token targets (B, T); a token is a
    byte unless `data.tokenizer` says otherwise."""

    kind = "text"
    has_accuracy = False

    @classmethod
    def model_fields(cls, cfg: DataConfig) -> dict[str, int]:
        """The model-config fields this data fixes: the tokenizer's vocabulary (256 bytes by
        default) and the window length."""
        return {"vocab_size": tokenize.vocab_size(cfg), "block_size": cfg.seq_len}

    @staticmethod
    def tokens_per_sample(cfg: DataConfig, patch_size: int) -> int:
        return cfg.seq_len

    def __init__(self, cfg: DataConfig):
        self.corpus = load_text(cfg)
        self.seq_len, self.batch_size = cfg.seq_len, cfg.batch_size
        for split, tokens in (("train", self.corpus.train), ("validation", self.corpus.val)):
            if len(tokens) <= self.seq_len + 1:
                raise ValueError(f"the {split} split has {len(tokens)} tokens, fewer than "
                                 f"data.seq_len + 2 = {self.seq_len + 2}; lower data.seq_len")

    def _windows(self, tokens: np.ndarray, starts: torch.Tensor) -> Batch:
        rows = np.stack([tokens[s : s + self.seq_len + 1] for s in starts.tolist()])
        window = torch.from_numpy(rows.astype(np.int64))  # (B, T + 1)
        return window[:, :-1], window[:, 1:]

    def train_batch(self, generator: torch.Generator) -> Batch:
        high = len(self.corpus.train) - self.seq_len - 1
        starts = torch.randint(0, high, (self.batch_size,), generator=generator)
        return self._windows(self.corpus.train, starts)

    def val_batches(self, count: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """`count` fixed validation batches; rank r gets batches r, r + world, ..."""
        generator = torch.Generator().manual_seed(VAL_SEED)
        high = len(self.corpus.val) - self.seq_len - 1
        starts = torch.randint(0, high, (count, self.batch_size), generator=generator)
        for i in range(rank, count, world):
            yield self._windows(self.corpus.val, starts[i])


class DigitsData:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes) as (B, 1, 8, 8) float images.

    Pixels (0..16) are scaled to [0, 1] and standardized with the training split's mean and
    standard deviation. The split is by a stable hash of the image index.
    """

    kind = "image"
    image_size, channels, num_classes = 8, 1, 10
    has_accuracy = True

    @classmethod
    def model_fields(cls, cfg: DataConfig) -> dict[str, int]:
        """The model-config fields this data fixes: the image shape and the classes."""
        return {"image_size": cls.image_size, "channels": cls.channels,
                "num_classes": cls.num_classes}

    @classmethod
    def tokens_per_sample(cls, cfg: DataConfig, patch_size: int) -> int:
        """Patch tokens per image (the class token not counted)."""
        return (cls.image_size // patch_size) ** 2

    def __init__(self, cfg: DataConfig):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ValueError("data.source 'digits' needs scikit-learn "
                             "(pip install 'normlab[hf]' or pip install scikit-learn)") from None
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        val = torch.tensor([in_validation(f"digits/{i}", cfg.val_fraction)
                            for i in range(len(labels))])
        mean, std = images[~val].mean(), images[~val].std()
        images = (images - mean) / std
        self.train_images, self.train_labels = images[~val], labels[~val]
        self.val_images, self.val_labels = images[val], labels[val]
        self.batch_size = cfg.batch_size
        self.meta = {"source": "sklearn-digits", "train_files": len(self.train_labels),
                     "val_files": len(self.val_labels)}

    def train_batch(self, generator: torch.Generator) -> Batch:
        index = torch.randint(0, len(self.train_labels), (self.batch_size,), generator=generator)
        return self.train_images[index], self.train_labels[index]

    def val_batches(self, count: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """Consecutive chunks of the validation set, at most `count` of them."""
        total = min(count, -(-len(self.val_labels) // self.batch_size))
        for i in range(rank, total, world):
            chunk = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield self.val_images[chunk], self.val_labels[chunk]


def data_class(cfg: DataConfig) -> type[TextData] | type[DigitsData]:
    """The class that serves `cfg.source` (every text source shares TextData)."""
    return DigitsData if cfg.source == "digits" else TextData


def load_data(cfg: DataConfig) -> TextData | DigitsData:
    return data_class(cfg)(cfg)
