"""Tent: it changes only the norms' parameters, lowers the entropy on a fixed batch, returns the
predictions of the pass before its update, resets, and refuses models it cannot adapt."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab import make_norm
from normlab.adapt import Tent, entropy
from normlab.models import ViT, ViTConfig


def vit(norm):
    torch.manual_seed(0)
    return ViT(ViTConfig(depth=2, dim=16, heads=2, image_size=8, patch_size=4, num_classes=5,
                         norm=norm))


def test_entropy_against_the_formula():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0], [1.0, 2.0]])
    p = torch.softmax(logits.double(), -1)
    per = -(p * p.log()).sum(-1)
    torch.testing.assert_close(entropy(logits).double(), per.mean(), rtol=1e-6, atol=1e-6)
    mask = torch.tensor([True, False, True])
    torch.testing.assert_close(entropy(logits, mask).double(), per[mask].mean(),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        entropy(logits, torch.zeros(3, dtype=torch.bool))


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_changes_only_its_parameters_and_lowers_the_entropy(norm):
    model = vit(norm)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tent = Tent(model, lr=1e-2)
    owned = set(tent.trainable.names)
    first = entropy(tent(x))
    for _ in range(10):
        tent(x)
    with torch.no_grad():
        last = entropy(model(x)[0])
    assert last < first
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != (name in owned), name
    assert all(n.split(".")[-2].startswith(("norm", "final_norm")) or "norm" in n
               for n in owned)


def test_returns_the_predictions_before_its_update_and_resets():
    model = vit("batchnorm")
    x = torch.randn(8, 1, 8, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tent = Tent(model)
    with torch.no_grad():
        expected = model(x)[0]  # batch statistics, the parameters as given
    model.load_state_dict(state)  # the no-grad pass moved the running statistics
    torch.testing.assert_close(tent(x), expected)
    tent.reset()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_batch_norms_use_the_test_batch_statistics():
    model = vit("batchnorm")
    tent = Tent(model)
    assert not model.training
    assert all(m.training for n, m in model.named_modules() if type(m).__name__ == "BatchNorm")
    x = torch.randn(6, 1, 8, 8)
    both = tent(torch.cat([x, x + 5]))[:6]
    tent.reset()
    assert not torch.allclose(both, tent(x))  # the other samples changed the statistics


def test_refusals():
    with pytest.raises(ValueError, match="no normalization layer"):
        Tent(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="no affine parameters"):
        Tent(nn.Sequential(nn.Linear(3, 4), make_norm("layernorm", 4, affine=False)))
    single = Tent(nn.Sequential(nn.Linear(3, 4), make_norm("batchnorm", 4)))
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        single(torch.randn(1, 3))  # one sample: no batch statistics
    with pytest.raises(ValueError, match="steps"):
        Tent(vit("layernorm"), steps=0)
