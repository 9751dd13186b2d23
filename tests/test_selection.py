"""One selector vocabulary and one `is_norm` rule, shared by surgery, diagnostics and weights."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import normlab
from normlab.diagnostics.select import select_blocks, select_norms
from normlab.selection import find_modules, is_norm, matcher
from normlab.surgery.select import norm_modules, select
from normlab.weights.select import select_modules


class LlamaRMSNorm(nn.Module):
    """Shaped and computing like HuggingFace's (surgery recognizes it by what it computes): a
    weight and `variance_epsilon`, not a torch norm class."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x * rms


class OlmoLayerNorm(nn.Module):
    """A parameter-free LayerNorm: recognised by its name alone."""

    def forward(self, x):
        return nn.functional.layer_norm(x, x.shape[-1:])


class FrozenBatchNorm2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))


class PreNorm(nn.Module):
    """A wrapper named like a norm, holding one: not a norm itself."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(dim), fn


@pytest.mark.parametrize("module", [
    nn.LayerNorm(4), nn.RMSNorm(4), nn.GroupNorm(2, 4), nn.LocalResponseNorm(2),
    nn.BatchNorm1d(4), nn.BatchNorm2d(4, affine=False), nn.BatchNorm3d(4), nn.SyncBatchNorm(4),
    nn.InstanceNorm1d(4), nn.InstanceNorm2d(4, affine=True), nn.LazyBatchNorm1d(),
    LlamaRMSNorm(4), OlmoLayerNorm(), FrozenBatchNorm2d(4),
], ids=lambda m: type(m).__name__)
def test_torch_and_other_libraries_norms_are_norms(module):
    assert is_norm(module)


@pytest.mark.parametrize("name", normlab.list_norms())
def test_every_normlab_norm_is_a_norm(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = normlab.get_norm_class(name).example_kwargs(16)
        assert is_norm(normlab.make_norm(name, 16, **kwargs))


@pytest.mark.parametrize("module", [
    nn.Linear(4, 4), nn.Identity(), nn.Dropout(), nn.Sequential(nn.LayerNorm(4)),
    PreNorm(4, nn.Linear(4, 4)),
], ids=lambda m: type(m).__name__)
def test_other_modules_are_not(module):
    assert not is_norm(module)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.layers = nn.ModuleList(
            nn.Sequential(LlamaRMSNorm(8), nn.Linear(8, 8), nn.BatchNorm1d(8)) for _ in range(2))
        self.final = normlab.make_norm("prepbn", 8)
        self.head = nn.Linear(8, 2)


def names(named):
    return [name for name, _ in named]


def test_every_selector_form():
    net = Net()
    everything = names(net.named_modules())

    def chosen(where):
        return [n for n in everything if matcher(where)(n, net.get_submodule(n))]

    assert chosen(None) == everything
    assert chosen(nn.Linear) == ["embed", "layers.0.1", "layers.1.1", "head"]
    assert chosen((LlamaRMSNorm, nn.BatchNorm1d)) == ["layers.0.0", "layers.0.2", "layers.1.0",
                                                      "layers.1.2"]
    assert chosen("layers.?.0") == ["layers.0.0", "layers.1.0"]
    assert chosen(["head", "embed"]) == ["embed", "head"]
    assert chosen(lambda name, m: name.endswith(".2")) == ["layers.0.2", "layers.1.2"]
    for bad in (3, [], ["x", 1], ()):
        with pytest.raises(TypeError, match="module selector"):
            matcher(bad)


def test_outermost_nested_and_root():
    net = Net()
    assert names(find_modules(net, "layers*", root=False, nested=False)) == ["layers"]
    assert names(find_modules(net, "layers.?", root=False, nested=True)) == ["layers.0",
                                                                             "layers.1"]
    assert names(find_modules(net, nn.Module, root=True, nested=False)) == [""]
    # PRepBN holds two normlab norms: only the outermost counts
    norms = names(find_modules(net, lambda n, m: is_norm(m), root=False, nested=False))
    assert norms == ["layers.0.0", "layers.0.2", "layers.1.0", "layers.1.2", "final"]
    nested = names(find_modules(net, lambda n, m: is_norm(m), root=False, nested=True))
    assert "final" in nested and any(n.startswith("final.") for n in nested)


def test_the_three_users_share_the_vocabulary_and_the_rule():
    net = Net()
    assert names(select_norms(net)) == ["layers.0.0", "layers.0.2", "layers.1.0", "layers.1.2",
                                        "final"]
    assert names(select_norms(net, nn.BatchNorm1d)) == ["layers.0.2", "layers.1.2"]
    assert names(select_blocks(net)) == ["layers.0", "layers.1"]
    assert names(select_blocks(net, ["layers.1", "head"])) == ["layers.1", "head"]
    # surgery: the norms it can read (the torch BatchNorm1d is a norm, but not one it reads)
    assert norm_modules(net) == ["layers.0.0", "layers.1.0", "final"]
    assert select(net, "layers.*", norm_modules(net), "test") == ["layers.0.0", "layers.1.0"]
    assert select(net, ["final"], norm_modules(net), "test") == ["final"]
    with pytest.raises(ValueError, match="selected no norm module"):
        select(net, nn.GroupNorm, norm_modules(net), "test")
    # weights: the root counts, nested modules too
    linears = select_modules(net, (nn.Linear,), lambda name, m: name != "head")
    assert names(linears) == ["embed", "layers.0.1", "layers.1.1"]
    assert names(select_modules(nn.Linear(2, 2), (nn.Linear,))) == [""]
