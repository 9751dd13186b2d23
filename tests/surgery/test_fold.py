"""fold_norms: γ/β folds (token norms) and whole-norm folds (batch norms in eval) are exact."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch
from surgery_models import bert, gpt2, llama, outputs, rel_err, token_ids, vit
from torch import nn

import normlab
from normlab.models import GPT, GPTConfig, ViT, ViTConfig
from normlab.norms import Norm, get_norm_class, make_norm
from normlab.surgery import fold_norms, to_crmsnorm, to_rmsnorm
from normlab.surgery.fold import norms_that_fold

TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:prepbn. switching to eval")

# architecture -> (builder, embedding path, readers that must take a γ)
HF_FOLDS = {
    "gpt2": (gpt2, "transformer.wte", {"transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc"}),
    "llama": (
        llama, "model.embed_tokens",
        {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj"},
    ),
}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("arch", sorted(HF_FOLDS))
def test_hf_fold_gives_the_same_logits(arch, tied):
    build, embedding, readers = HF_FOLDS[arch]
    model = build(tied=tied)
    source = copy.deepcopy(model)
    ids = token_ids()
    model, report = fold_norms(model)
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL
    assert report.max_rel_error < TOL
    # every norm keeps its class, its weight set to the identity γ = 1 (and its bias to 0)
    assert not [m for m in model.modules() if isinstance(m, Norm)]
    paths = [c.path for c in report.changes if "class kept" in c.detail]
    folded = [model.get_submodule(p) for p in paths]
    assert len(folded) == 5
    assert all(type(n) is type(source.get_submodule(p)) for n, p in zip(folded, paths, strict=True))
    kept = {c.path for c in report.changes if "β kept as β/γ" in c.detail}
    # GPT-2's head has no bias: ln_f keeps β/γ, so that no parameter is added
    assert kept == ({"transformer.ln_f"} if arch == "gpt2" else set())
    for n, p in zip(folded, paths, strict=True):
        assert torch.equal(n.weight, torch.ones_like(n.weight))
        assert getattr(n, "bias", None) is None or p in kept or not n.bias.any()
    emb = model.get_submodule(embedding)
    assert model.lm_head.weight is not emb.weight
    # the embedding itself is untouched: only the head took the final γ/β
    torch.testing.assert_close(emb.weight, source.get_submodule(embedding).weight)
    assert readers | {"lm_head"} <= {c.path for c in report.changes if "γ" in c.detail}


def test_fold_where_selects_sites():
    model = gpt2()
    source = copy.deepcopy(model)
    model, _report = fold_norms(model, "*.ln_2")
    assert torch.equal(model.transformer.h[0].ln_1.weight, source.transformer.h[0].ln_1.weight)
    assert not model.transformer.h[0].ln_2.weight.ne(1).any()
    ids = token_ids()
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL


def test_vit_without_head_keeps_the_final_norm():
    model = vit(head=False)
    model, report = fold_norms(model)
    assert isinstance(model.layernorm, nn.LayerNorm)
    assert any("layernorm: kept" in n for n in report.notes)
    assert report.max_rel_error < TOL


def test_fold_then_convert_stays_exact():
    model = gpt2()
    source = copy.deepcopy(model)
    model, _ = fold_norms(model)
    model, _ = to_rmsnorm(model)  # the folded LayerNorms have no affine left to fold
    ids = token_ids()
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL


def test_post_ln_fold_is_refused_before_anything_changes():
    model = bert()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"feeds a non-Linear consumer .*Post-LN"):
        fold_norms(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- normlab models: every registered norm keeps the fold its NormInfo declares -------------


def _gpt(norm: str = "layernorm", placement: str = "pre", depth: int = 2) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=37, block_size=16, depth=depth, dim=32, heads=2, norm=norm, placement=placement,
        norm_kwargs=get_norm_class(norm).example_kwargs(32),
    )
    return GPT(config)


def _train(model: nn.Module, batch, steps: int = 4) -> nn.Module:
    """A few SGD steps, so running statistics, γ, β (and PRepBN's λ) move."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        _, loss = model(*batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def _perturb_norms(model: nn.Module, shift: float = 0.0) -> nn.Module:
    """Move every norm parameter (γ, β, gains, DyT's α, ...) away from where training left it."""
    for module in model.modules():
        if isinstance(module, Norm):
            for p in module.parameters():
                p.add_(shift + 0.3 * torch.randn_like(p))
    return model


def _logits(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)[0]


@pytest.mark.parametrize("norm", normlab.list_norms())
def test_every_norm_folds_as_its_info_declares(norm):
    fold = get_norm_class(norm).info.fold
    idx = torch.randint(0, 37, (4, 12), generator=torch.Generator().manual_seed(1))
    model = _perturb_norms(_train(_gpt(norm), (idx, idx.roll(-1, 1))))
    source = copy.deepcopy(model)
    model, report = fold_norms(model)
    assert rel_err(_logits(model, idx), _logits(source, idx)) < TOL
    norms = {n: m for n, m in model.named_modules() if isinstance(m, Norm)}
    if fold == "op":  # the whole norm went into the readers
        assert not norms and report.max_rel_error < TOL
        assert sum("norm removed" in c.detail for c in report.changes) == 5
    elif fold == "affine":  # only the statistics stay: the state of the affine=False form
        plain = make_norm(norm, 32, affine=False, **get_norm_class(norm).example_kwargs(32))
        kept = {n for n, _ in plain.named_parameters()}
        assert len(norms) == 5 and report.max_rel_error < TOL
        for name, m in norms.items():
            assert type(m) is get_norm_class(norm) and not m.affine
            assert m.state_dict().keys() == plain.state_dict().keys()
            before = source.get_submodule(name)
            affine = {n for n, _ in before.named_parameters()} - kept
            for key, value in m.state_dict().items():  # statistics as trained, affine → constant
                expected = plain.state_dict()[key] if key in affine else before.state_dict()[key]
                torch.testing.assert_close(value, expected, rtol=0, atol=0)
        assert sum("affine removed" in c.detail for c in report.changes) == 5
    else:  # nothing folds: every norm kept, as it was, and each one said so
        assert len(norms) == 5 and not report.changes
        for name, m in norms.items():
            torch.testing.assert_close(m.state_dict(), source.get_submodule(name).state_dict())
        assert len(report.notes) == 5
        assert all(f"{norm} has nothing that folds exactly" in n for n in report.notes)


def test_scalenorm_gain_folds_as_gain_over_sqrt_d():
    # y = g·x/max(‖x‖, eps); without affine ScaleNorm keeps g = √D, so the head takes g/√D
    model = _perturb_norms(_gpt("scalenorm"), shift=1.0).eval()
    g = model.final_norm.gain.detach().clone()
    head = model.lm_head.weight.detach().clone()
    idx = token_ids(vocab=37)
    source = copy.deepcopy(model)
    model, report = fold_norms(model)
    assert rel_err(_logits(model, idx), _logits(source, idx)) < TOL
    torch.testing.assert_close(model.lm_head.weight, head * g / math.sqrt(32))
    assert "gain" in model.final_norm._buffers  # as ScaleNorm(affine=False) holds it
    assert model.final_norm.gain.item() == torch.tensor(math.sqrt(32)).item()
    assert not list(model.final_norm.parameters())
    final = next(c for c in report.changes if c.path == "final_norm")
    assert "gain / 5.65685" in final.detail and "expanded to 32 channels" in final.detail


def test_the_documented_op_folds_are_the_registry_s():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "surgery.md").read_text()
    listed = re.search(r"norms with `info.fold == \"op\"` \(today: ([^)]*)\)", docs)
    assert listed, "docs/surgery.md: the fold_norms row lists the op-fold norms"
    assert re.findall(r"`(\w+)`", listed.group(1)) == norms_that_fold("op")
    assert "onlinenorm" in norms_that_fold("op")


def test_normlab_vit_with_mean_pooling_folds_away():
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=4, channels=3, num_classes=4, depth=2, dim=32, heads=2,
        norm="batchnorm", pool="mean",
    )
    images = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    model = _train(ViT(config), (images, torch.tensor([0, 1, 2, 3])))
    source = copy.deepcopy(model)
    model, _report = fold_norms(model)
    assert not any(isinstance(m, Norm) for m in model.modules())
    with torch.no_grad():
        assert rel_err(model(images)[0], source(images)[0]) < TOL


def test_batch_norms_in_training_mode_are_refused():
    config = GPTConfig(vocab_size=37, block_size=16, depth=1, dim=16, heads=2, norm="batchnorm")
    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        fold_norms(GPT(config).train())


def test_normlab_post_ln_gpt_fold_is_refused():
    config = GPTConfig(vocab_size=37, block_size=16, depth=1, dim=16, heads=2, placement="post")
    with pytest.raises(ValueError, match="its output is added to or is the residual stream"):
        fold_norms(GPT(config).eval())


def test_normlab_lns_gpt_folds_through_the_input_scale():
    model = _perturb_norms(_gpt(placement="lns", depth=3)).eval()
    idx = token_ids(vocab=37)
    source = copy.deepcopy(model)
    fold_norms(model)
    assert rel_err(_logits(model, idx), _logits(source, idx)) < TOL


@torch.no_grad()
def _perturb_stream(model: GPT) -> GPT:
    """Norm affines, biases and the position table off their init: a stream with a clear mean."""
    for name, p in model.named_parameters():
        if "norm" in name or name.endswith("bias") or name == "wpe.weight":
            p.add_(0.3 + 0.3 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(("placement", "depth"), [("pre", 2), ("lns", 3)])
@pytest.mark.parametrize("op", [to_rmsnorm, to_crmsnorm], ids=["rmsnorm", "crmsnorm"])
def test_normlab_pre_ln_gpt_converts_exactly(op, placement, depth):
    # LNS: the readers see s·LN(x), s = 1/√ℓ a constant the blocks keep applying
    model = _perturb_stream(_gpt(placement=placement, depth=depth))
    idx = token_ids(vocab=37)
    source = copy.deepcopy(model)
    model, report = op(model)
    assert rel_err(_logits(model, idx), _logits(source, idx)) < TOL
    assert report.max_rel_error < TOL
    assert model.lm_head.weight is not model.wte.weight
    width = 31 if op is to_crmsnorm else 32
    assert model.wte.weight.shape[1] == model.final_norm.dim == width
    scales = [b.placement.input_scale for b in model.blocks]
    assert scales == [1 / math.sqrt(i + 1) if placement == "lns" else 1.0 for i in range(depth)]


@pytest.mark.parametrize("placement", ["peri", "normformer", "gpas", "post"])
def test_normlab_conversion_refuses_what_is_not_pre_ln(placement):
    model = _perturb_stream(_gpt(placement=placement))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"not plain Pre-LN|Post-LN"):
        to_rmsnorm(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_normlab_peri_ln_folds_only_the_selected_input_norms():
    model = _perturb_norms(_gpt(placement="peri")).eval()
    with pytest.raises(ValueError, match="branch_out feeds a non-Linear consumer"):
        fold_norms(model)
    source = copy.deepcopy(model)
    model, report = fold_norms(model, "*_pre")
    assert len([c for c in report.changes if "affine removed" in c.detail]) == 4
    idx = token_ids(vocab=37)
    assert rel_err(_logits(model, idx), _logits(source, idx)) < TOL
