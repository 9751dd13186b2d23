"""Data: the by-file split, the cache, batches, generator state, and clear errors."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch

from normlab.bench.config import DataConfig
from normlab.bench.data import DigitsData, TextData, load_text, stdlib_files


def reference_is_val(rel: str, fraction: float) -> bool:
    return int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) < fraction * 2**64


def test_stdlib_corpus_is_split_by_file(cache_dir):
    cfg = DataConfig(source="stdlib", cache_dir=cache_dir)
    corpus = load_text(cfg)
    files = stdlib_files()
    assert files and not any(part in ("test", "tests", "site-packages")
                             for rel, _ in files for part in rel.split("/")[:-1])
    val = [p for rel, p in files if reference_is_val(rel, cfg.val_fraction)]
    train = [p for rel, p in files if not reference_is_val(rel, cfg.val_fraction)]
    # files joined by one 0 byte each
    assert len(corpus.train) == sum(p.stat().st_size for p in train) + len(train) - 1
    assert len(corpus.val) == sum(p.stat().st_size for p in val) + len(val) - 1
    assert bytes(corpus.val[: val[0].stat().st_size]) == val[0].read_bytes()
    assert corpus.meta["train_files"] == len(train) and corpus.meta["val_files"] == len(val)


def test_folder_and_single_file_sources(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(40):
        (folder / f"doc{i}.txt").write_text(f"document {i} " * 20)
    cfg = DataConfig(source="path", path=str(folder), val_fraction=0.25,
                     cache_dir=str(tmp_path / "cache"), seq_len=16, batch_size=3)
    corpus = load_text(cfg)
    n_val = sum(reference_is_val(f"doc{i}.txt", 0.25) for i in range(40))
    assert corpus.meta["val_files"] == n_val and 0 < n_val < 40
    single = tmp_path / "one.txt"
    single.write_bytes(bytes(range(256)) * 10)
    corpus = load_text(DataConfig(source="path", path=str(single), val_fraction=0.1,
                                  cache_dir=str(tmp_path / "cache")))
    assert len(corpus.train) == 2304 and bytes(corpus.val) == (bytes(range(256)) * 10)[2304:]
    with pytest.raises(ValueError, match="neither a file nor a folder"):
        load_text(DataConfig(source="path", path=str(tmp_path / "nope"),
                             cache_dir=str(tmp_path)))


def test_batches_are_next_byte_pairs_and_generator_state_replays(cache_dir):
    data = TextData(DataConfig(source="stdlib", cache_dir=cache_dir, seq_len=24, batch_size=5))
    gen = torch.Generator().manual_seed(3)
    x, y = data.train_batch(gen)
    assert x.shape == y.shape == (5, 24) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    state = gen.get_state()
    after = data.train_batch(gen)
    gen.set_state(state)
    replay = data.train_batch(gen)
    assert all(torch.equal(a, b) for a, b in zip(after, replay, strict=True))
    vals = list(data.val_batches(4))
    again = list(data.val_batches(4))
    assert len(vals) == 4 and all(torch.equal(a[0], b[0]) for a, b in zip(vals, again,
                                                                          strict=True))
    rank1 = list(data.val_batches(4, rank=1, world=2))
    assert len(rank1) == 2 and torch.equal(rank1[0][0], vals[1][0])


def test_hf_source_without_datasets_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    cfg = DataConfig(source="hf", hf_name="some/corpus", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="datasets"):
        load_text(cfg)


def test_digits_split_and_missing_sklearn(monkeypatch):
    data = DigitsData(DataConfig(source="digits", val_fraction=0.2, batch_size=50))
    assert len(data.train_labels) + len(data.val_labels) == 1797
    assert data.train_images.shape[1:] == (1, 8, 8)
    assert abs(float(data.train_images.mean())) < 1e-5
    share = len(data.val_labels) / 1797
    assert 0.15 < share < 0.25
    chunks = list(data.val_batches(100))
    assert sum(len(c[1]) for c in chunks) == len(data.val_labels)
    x, y = data.train_batch(torch.Generator().manual_seed(0))
    assert x.shape == (50, 1, 8, 8) and y.dtype == torch.long
    assert np.isin(y.numpy(), np.arange(10)).all()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ValueError, match="scikit-learn"):
        DigitsData(DataConfig(source="digits"))
