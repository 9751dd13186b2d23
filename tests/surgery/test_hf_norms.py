"""HuggingFace norm classes are recognized by what they compute, checked against torch's own
`F.rms_norm` / `F.layer_norm` with γ = offset + w."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from normlab.surgery.hf_norms import hf_norm_classes, identify
from normlab.surgery.translate import read_norm
from normlab.surgery.zoo import build

pytest.importorskip("transformers")
DIM = 16


def _instance(module: str, name: str):
    """`cls(DIM, eps=1e-6)` (or `cls(DIM)`), or None for a class built another way."""
    cls = getattr(importlib.import_module(module), name)
    for kwargs in ({"eps": 1e-6}, {}):
        try:
            return cls(DIM, **kwargs)
        except Exception:
            continue
    return None


def _check_against_torch(norm) -> None:
    found = identify(norm)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(DIM, generator=gen))
        bias = getattr(norm, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.copy_(torch.randn(DIM, generator=gen))
        x = torch.randn(3, 5, DIM, generator=gen)
        gamma = norm.weight + found.offset
        eps = getattr(norm, found.eps_attr)
        if found.kind == "rmsnorm":
            ref = F.rms_norm(x, (DIM,), gamma, eps)
        else:
            ref = F.layer_norm(x, (DIM,), gamma, bias if isinstance(bias, torch.Tensor) else None,
                               eps)
        torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-5)


def test_the_list_comes_from_the_installed_transformers():
    classes = {name for _, name in hf_norm_classes()}
    assert {"LlamaRMSNorm", "Phi3RMSNorm", "GemmaRMSNorm", "T5LayerNorm"} <= classes
    assert len(classes) > 100


@pytest.mark.parametrize("name", ["llama", "phi3", "gemma", "gemma2", "olmo2", "t5", "qwen3"])
def test_every_norm_of_the_zoo_models_is_recognized(name):
    model = build(name)
    hf = {type(m) for m in model.modules() if type(m).__module__.startswith("transformers")
          and "Norm" in type(m).__name__}
    assert hf
    for cls in hf:
        norm = next(m for m in model.modules() if type(m) is cls)
        assert identify(norm) is not None, cls.__name__
        params = read_norm(norm)
        assert params.kind == "rmsnorm" and params.dim == norm.weight.shape[0]


def test_gemma_counts_one_plus_w_and_phi3_is_plain():
    gemma = _instance("transformers.models.gemma.modeling_gemma", "GemmaRMSNorm")
    phi3 = _instance("transformers.models.phi3.modeling_phi3", "Phi3RMSNorm")
    assert identify(gemma).offset == 1.0 and identify(phi3).offset == 0.0
    for norm in (gemma, phi3):
        _check_against_torch(norm)


def test_a_module_that_is_no_norm_is_not_recognized():
    class FakeRMSNorm(torch.nn.Module):  # named like a norm, computes something else
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(DIM))
            self.eps = 1e-6

        def forward(self, x):
            return x * self.weight

    assert identify(FakeRMSNorm()) is None and read_norm(FakeRMSNorm()) is None


@pytest.mark.slow
def test_every_norm_class_of_transformers_matches_torch():
    recognized = 0
    for module, name in hf_norm_classes():
        norm = _instance(module, name)
        if norm is None or identify(norm) is None:
            continue
        _check_against_torch(norm)
        recognized += 1
    assert recognized > 50
