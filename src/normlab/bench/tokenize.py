"""Token streams of the bench's text: bytes, a BPE trained on the corpus, or a saved tokenizer.

    data.tokenizer=bytes                   one token per byte (vocabulary 256), the default
    data.tokenizer=bpe data.vocab_size=8192   a byte-level BPE trained on the training split
    data.tokenizer=path/to/hf_folder       the `tokenizer.json` of a transformers folder (or file)

A BPE is trained once per corpus and vocabulary size with HuggingFace `tokenizers` (byte-level
pre-tokenizer, so every byte sequence encodes) on the training split only, so validation text
never shapes the vocabulary, and is cached next to the corpus with both token streams. Documents
are encoded one by one and joined with the tokenizer's end-of-document token (`<|doc|>` for a
trained BPE; a saved tokenizer's first special token, or nothing if it has none). Paper: Sennrich
et al., "Neural Machine Translation of Rare Words with Subword Units" (ACL 2016); byte-level BPE
as in GPT-2 (Radford et al., 2019).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from normlab.bench.config import DataConfig

BYTES = "bytes"
TRAINED = "bpe"
END_OF_DOCUMENT = "<|doc|>"


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ValueError("data.tokenizer other than 'bytes' needs HuggingFace tokenizers: "
                         "pip install 'normlab[hf]'") from None
    return tokenizers


def tokenizer_file(name: str) -> Path:
    """The tokenizer.json that `data.tokenizer` names (a file, or a folder holding one)."""
    path = Path(name).expanduser()
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"data.tokenizer {name!r} is neither 'bytes', 'bpe' nor a "
                         "tokenizer.json file or a folder holding one")
    return path


def vocab_size(cfg: DataConfig) -> int:
    """The vocabulary the model needs for `cfg.tokenizer`."""
    if cfg.tokenizer == BYTES:
        return 256
    if cfg.tokenizer == TRAINED:
        return cfg.vocab_size
    tokenizer = _tokenizers().Tokenizer.from_file(str(tokenizer_file(cfg.tokenizer)))
    return tokenizer.get_vocab_size(with_added_tokens=True)


def fingerprint(cfg: DataConfig) -> str:
    """What the token streams depend on besides the corpus (part of their cache key)."""
    if cfg.tokenizer == TRAINED:
        return f"bpe{cfg.vocab_size}"
    digest = hashlib.sha256(tokenizer_file(cfg.tokenizer).read_bytes()).hexdigest()[:12]
    return f"tok{digest}"


def train_bpe(train: bytes, size: int) -> Any:
    """A byte-level BPE of `size` tokens (its end-of-document token included) on `train`."""
    tk = _tokenizers()
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=size, special_tokens=[END_OF_DOCUMENT], show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_documents(train), trainer=trainer)
    if tokenizer.get_vocab_size() != size:
        raise ValueError(f"data.vocab_size={size}: the training split only supports "
                         f"{tokenizer.get_vocab_size()} BPE tokens; lower it")
    return tokenizer


def _documents(stream: bytes) -> list[str]:
    return [doc.decode("utf-8", errors="replace") for doc in stream.split(b"\0")]


def encode(tokenizer: Any, stream: bytes) -> np.ndarray:
    """The token ids of `stream`'s documents (0-byte separated), each followed by the
    end-of-document token when the tokenizer has one; uint16 when the vocabulary fits."""
    specials = [t for t, added in tokenizer.get_added_tokens_decoder().items() if added.special]
    separator = [min(specials)] if specials else []
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(_documents(stream), add_special_tokens=False):
        ids += encoding.ids + separator
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    return np.asarray(ids, dtype=np.uint16 if size <= 2**16 else np.uint32)


def load(cfg: DataConfig, train: bytes, cached: Path) -> Any:
    """The tokenizer of `cfg`: read from its file, or a BPE trained on `train` and saved at
    `cached` (read from there next time)."""
    tk = _tokenizers()
    if cfg.tokenizer != TRAINED:
        return tk.Tokenizer.from_file(str(tokenizer_file(cfg.tokenizer)))
    if cached.is_file():
        return tk.Tokenizer.from_file(str(cached))
    tokenizer = train_bpe(train, cfg.vocab_size)
    tmp = cached.with_name(f".{cached.name}.tmp")
    tokenizer.save(str(tmp))
    tmp.replace(cached)
    return tokenizer
