"""data.tokenizer: a BPE trained on the corpus, or a saved tokenizer, instead of bytes."""

from __future__ import annotations

import json

import pytest

from normlab.bench import train
from normlab.bench.data import load_data, load_text
from normlab.bench.model import build_model
from normlab.bench.presets import load_preset

tokenizers = pytest.importorskip("tokenizers")

WORDS = ("def normalize(x):\n    return (x - mean) / std\n", "class LayerNorm(Module): pass\n",
         "import torch\nprint('hello world')\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(60):
        (folder / f"f{i}.py").write_text(WORDS[i % 3] * (3 + i % 5) + f"# file {i}\n")
    return folder


def run_config(corpus, tmp_path, *overrides: str):
    cfg, _ = load_preset("llama-smoke", ["data.source=path", f"data.path={corpus}",
                                         f"data.cache_dir={tmp_path}", "data.seq_len=16",
                                         "data.val_fraction=0.2", *overrides])
    return cfg


def data(corpus, tmp_path, *overrides: str):
    return run_config(corpus, tmp_path, *overrides).data


def test_a_trained_bpe_round_trips_the_text_and_sets_the_vocabulary(corpus, tmp_path):
    cfg = run_config(corpus, tmp_path, "data.tokenizer=bpe", "data.vocab_size=300")
    text = load_text(cfg.data)
    by_bytes = load_text(data(corpus, tmp_path))
    assert text.meta["vocab_size"] == 300 and text.train.dtype.name == "uint16"
    assert 0 < len(text.train) < len(by_bytes.train)  # merges make fewer tokens than bytes
    assert int(text.train.max()) < 300
    saved = next(tmp_path.glob("*.tokenizer.json"))
    tokenizer = tokenizers.Tokenizer.from_file(str(saved))
    doc = tokenizer.token_to_id("<|doc|>")
    first = list(text.train[: list(text.train).index(doc)])
    assert tokenizer.decode(first) == bytes(by_bytes.train).split(b"\0")[0].decode()
    assert build_model(cfg).wte.num_embeddings == 300
    again = load_text(cfg.data)  # from the cache: the same streams, no second training
    assert (again.train == text.train).all() and saved.stat().st_mtime_ns == next(
        tmp_path.glob("*.tokenizer.json")).stat().st_mtime_ns


def test_a_saved_tokenizer_gives_the_same_tokens_as_the_trained_one(corpus, tmp_path):
    trained = load_text(data(corpus, tmp_path, "data.tokenizer=bpe", "data.vocab_size=300"))
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(next(tmp_path.glob("*.tokenizer.json")).read_text())
    cfg = data(corpus, tmp_path / "other", f"data.tokenizer={folder}")
    assert (load_text(cfg).train == trained.train).all()
    assert load_data(cfg).corpus.meta["tokenizer"] == str(folder)


def test_a_run_trains_on_bpe_tokens(corpus, tmp_path):
    cfg = run_config(corpus, tmp_path, "data.tokenizer=bpe", "data.vocab_size=280",
               "placement.name=pre", "norm.name=rmsnorm", "train.steps=2", "train.eval_every=2",
               "train.diagnose_every=0")
    summary = train.run(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["tokenizer"] == "bpe"


@pytest.mark.parametrize(("override", "message"), [
    ("data.tokenizer=nowhere", "neither 'bytes', 'bpe' nor a tokenizer.json"),
    ("data.vocab_size=200", "data.vocab_size must exceed the 256 bytes"),
])
def test_bad_tokenizer_settings_are_refused(corpus, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):  # at config time or when the data loads
        load_text(data(corpus, tmp_path, "data.tokenizer=bpe", override))


def test_a_vocabulary_the_corpus_cannot_fill_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"only supports .* BPE tokens; lower it"):
        load_text(data(corpus, tmp_path, "data.tokenizer=bpe", "data.vocab_size=60000"))
