"""to_rmsnorm / to_crmsnorm: the exact Pre-LN → Pre-(C)RMSNorm conversion, and its refusals."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from surgery_models import gpt2, llama, outputs, rel_err, token_ids, vit
from torch import nn

from normlab.norms import Norm
from normlab.norms.rms import CRMSNorm, RMSNorm
from normlab.surgery import to_crmsnorm, to_rmsnorm

TOL = 1e-5  # relative, fp32


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("op", [to_rmsnorm, to_crmsnorm], ids=["rmsnorm", "crmsnorm"])
def test_gpt2_conversion_gives_the_same_logits(op, tied):
    model = gpt2(tied=tied)
    source = copy.deepcopy(model)
    ids = token_ids()
    model, report = op(model)
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL
    assert report.exact and report.max_rel_error < TOL
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    norm_cls = CRMSNorm if op is to_crmsnorm else RMSNorm
    norms = [m for m in model.modules() if isinstance(m, Norm)]
    assert len(norms) == 5 and all(type(n) is norm_cls and n.weight is None for n in norms)
    width = 31 if op is to_crmsnorm else 32
    assert model.transformer.wte.weight.shape == (61, width)
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.config.tie_word_embeddings is False
    # every site is listed: 5 norms, 5 readers, 2 embeddings + 4 branch outputs (+ the untie)
    assert len(report.changes) == 16 + tied
    assert {"transformer.h.0.attn.c_attn", "lm_head", "transformer.wpe"} <= {
        c.path for c in report.changes
    }


def test_conversion_is_instance_scoped():
    model, _ = to_crmsnorm(gpt2())
    fresh = gpt2()
    assert isinstance(fresh.transformer.h[0].ln_1, nn.LayerNorm)
    assert fresh.transformer.wte.weight.shape == (61, 32)
    assert isinstance(model.transformer.h[0].ln_1, CRMSNorm)


def test_conversion_holds_for_a_stream_with_a_large_mean():
    model = gpt2()
    with torch.no_grad():
        model.transformer.wte.weight.add_(3.0)  # LN removes it; RMSNorm alone would not
    source = copy.deepcopy(model)
    ids = token_ids()
    to_rmsnorm(model)
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL


def test_gpt2_without_head_keeps_the_final_affine():
    model = gpt2(head=False)
    source = copy.deepcopy(model)
    ids = token_ids()
    model, _report = to_rmsnorm(model)
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL
    final = model.ln_f
    assert isinstance(final, RMSNorm) and final.weight is not None and final.bias is not None
    with pytest.raises(ValueError, match="model output"):
        to_crmsnorm(gpt2(head=False))


@pytest.mark.parametrize("op", [to_rmsnorm, to_crmsnorm], ids=["rmsnorm", "crmsnorm"])
def test_vit_conversion_gives_the_same_logits(op):
    model = vit()
    source = copy.deepcopy(model)
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model, report = op(model)
    assert rel_err(outputs(model, pixel_values=pixels), outputs(source, pixel_values=pixels)) < TOL
    assert report.max_rel_error < TOL
    if op is to_crmsnorm:
        assert model.vit.embeddings.cls_token.shape[-1] == 31


@pytest.mark.parametrize("op", [to_rmsnorm, to_crmsnorm])
def test_llama_has_nothing_exact_to_convert(op):
    model = llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="already normalizes with RMSNorm") as err:
        op(model)
    assert "fold_norms" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cross_attention_gpt2_is_refused():
    # the probe has no encoder states: ln_cross_attn never runs, so its surroundings are unknown
    with pytest.raises(ValueError, match=r"ln_cross_attn .*did not run in the probe forward"):
        to_rmsnorm(gpt2(add_cross_attention=True))


def test_bert_post_ln_is_refused():
    from surgery_models import bert

    with pytest.raises(ValueError, match="Post-LN"):
        to_rmsnorm(bert())


def test_unknown_model_is_refused_with_the_supported_list():
    with pytest.raises(ValueError, match="no surgery adapter") as refused:
        to_rmsnorm(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4)))
    for name in ("HuggingFace models", "normlab GPT", "normlab ViT"):
        assert name in str(refused.value)


def test_a_model_whose_probe_forward_fails_is_refused_with_the_reason():
    model = type("SomethingForElse", (nn.Module,), {"forward": lambda self, x: x})()
    model.config = SimpleNamespace(model_type="gpt2", vocab_size=5)
    with pytest.raises(ValueError, match=r"probe forward of|probe forward, which failed"):
        to_rmsnorm(model)


def test_a_model_whose_norm_was_swapped_is_refused():
    from normlab.surgery import swap_norms

    model, _ = swap_norms(gpt2(), "rmsnorm", "*.ln_1", approximate=True)
    with pytest.raises(ValueError, match="not a LayerNorm"):
        to_rmsnorm(model)
