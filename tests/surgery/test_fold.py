"""fold_norms: γ/β folds (token norms) and whole-norm folds (batch norms in eval) are exact."""

from __future__ import annotations

import copy

import pytest
import torch
from surgery_models import bert, gpt2, llama, outputs, rel_err, token_ids, vit
from torch import nn

from normlab.models import GPT, GPTConfig, ViT, ViTConfig
from normlab.norms import Norm
from normlab.surgery import fold_norms, to_crmsnorm, to_rmsnorm

TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:prepbn. switching to eval")


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_gpt2_fold_gives_the_same_logits(tied):
    model = gpt2(tied=tied)
    source = copy.deepcopy(model)
    ids = token_ids()
    model, report = fold_norms(model)
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL
    assert report.max_rel_error < TOL
    norms = [m for m in model.modules() if isinstance(m, Norm)]
    assert len(norms) == 5 and all(n.weight is None and n.bias is None for n in norms)
    assert model.lm_head.weight is not model.transformer.wte.weight
    # the embedding itself is untouched: only the head took the final γ/β
    torch.testing.assert_close(model.transformer.wte.weight, source.transformer.wte.weight)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_llama_fold_gives_the_same_logits(tied):
    model = llama(tied=tied)
    source = copy.deepcopy(model)
    ids = token_ids()
    model, report = fold_norms(model)
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL
    assert report.max_rel_error < TOL
    norms = [m for m in model.modules() if isinstance(m, Norm)]
    assert len(norms) == 5 and all(n.name == "rmsnorm" and n.weight is None for n in norms)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    folded_into = {c.path for c in report.changes if "γ" in c.detail}
    assert {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj", "lm_head"} <= (
        folded_into
    )


def test_fold_where_selects_sites():
    model = gpt2()
    source = copy.deepcopy(model)
    model, _report = fold_norms(model, "*.ln_2")
    assert isinstance(model.transformer.h[0].ln_1, nn.LayerNorm)
    assert isinstance(model.transformer.h[0].ln_2, Norm)
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
    with pytest.raises(ValueError, match=r"feeds the residual stream \(Post-LN\)"):
        fold_norms(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- normlab models: batch-statistic norms fold away entirely in eval mode ------------------

NORMLAB_NORMS = {
    "batchnorm": {},
    "unifiednorm": {"warmup_iters": 2, "window_size": 2},
    "repbn": {},
    "prepbn": {"step": 2},
}


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


@pytest.mark.parametrize("norm", sorted(NORMLAB_NORMS))
def test_normlab_gpt_batch_norms_fold_away(norm):
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=37, block_size=16, depth=2, dim=32, heads=2, norm=norm,
        norm_kwargs=NORMLAB_NORMS[norm],
    )
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 37, (4, 12), generator=gen)
    model = _train(GPT(config), (idx, idx.roll(-1, 1)))
    source = copy.deepcopy(model)
    model, report = fold_norms(model)
    assert not any(isinstance(m, Norm) for m in model.modules())
    with torch.no_grad():
        assert rel_err(model(idx)[0], source(idx)[0]) < TOL
    assert report.max_rel_error < TOL
    assert sum("norm removed" in c.detail for c in report.changes) == 5


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
    with pytest.raises(ValueError, match="feeds the residual stream"):
        fold_norms(GPT(config).eval())


def test_normlab_lns_gpt_folds_through_the_input_scale():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=37, block_size=16, depth=3, dim=32, heads=2, placement="lns")
    model = GPT(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    idx = token_ids(vocab=37)
    source = copy.deepcopy(model)
    fold_norms(model)
    with torch.no_grad():
        assert rel_err(model(idx)[0], source(idx)[0]) < TOL


@pytest.mark.parametrize("op", [to_rmsnorm, to_crmsnorm], ids=["rmsnorm", "crmsnorm"])
def test_normlab_pre_ln_gpt_converts_exactly(op):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=37, block_size=16, depth=2, dim=32, heads=2)
    model = GPT(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias") or name == "wpe.weight":
                p.add_(0.3 + 0.3 * torch.randn_like(p))
    idx = token_ids(vocab=37)
    source = copy.deepcopy(model)
    model, _ = op(model)
    with torch.no_grad():
        assert rel_err(model(idx)[0], source(idx)[0]) < TOL
    assert model.lm_head.weight is not model.wte.weight
    width = 31 if op is to_crmsnorm else 32
    assert model.wte.weight.shape[1] == model.final_norm.dim == width


def test_normlab_peri_ln_folds_only_the_selected_input_norms():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=37, block_size=16, depth=2, dim=32, heads=2, placement="peri")
    model = GPT(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    with pytest.raises(ValueError, match="branch_out feeds the residual stream"):
        fold_norms(model)
    source = copy.deepcopy(model)
    model, report = fold_norms(model, "*_pre")
    assert len([c for c in report.changes if "affine removed" in c.detail]) == 4
    idx = token_ids(vocab=37)
    with torch.no_grad():
        assert rel_err(model(idx)[0], source(idx)[0]) < TOL
