"""The corruptions: deterministic per seed, their defining formulas, their refusals."""

from __future__ import annotations

import pytest
import torch

from normlab.adapt import CORRUPTIONS, corrupt


def images(seed=0):
    return torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_deterministic_per_seed_and_new_tensor(name):
    x = images()
    a, b = corrupt(x, name, seed=3), corrupt(x, name, seed=3)
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert torch.equal(x, images())  # the input is untouched


@pytest.mark.parametrize("name", ["gaussian_noise", "rotation"])
def test_random_corruptions_differ_between_seeds(name):
    x = images()
    assert not torch.equal(corrupt(x, name, seed=0), corrupt(x, name, seed=1))


def test_formulas():
    x = images()
    noise = corrupt(x, "gaussian_noise", 0.5, seed=2) - x
    assert noise.std().item() == pytest.approx(0.5, rel=0.15)
    c = corrupt(x, "contrast", 0.3)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(c, mean + 0.3 * (x - mean))
    flat = torch.full((2, 1, 8, 8), 1.7)
    torch.testing.assert_close(corrupt(flat, "blur", 1.0), flat)  # a blur keeps constants
    torch.testing.assert_close(corrupt(x, "rotation", 1e-4), x, atol=1e-3, rtol=0)
    turned = corrupt(x, "rotation", 90.0, seed=0)
    assert (turned - x).abs().mean() > 0.1


def test_refusals():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images(), "fog")
    with pytest.raises(ValueError, match="severity"):
        corrupt(images(), "blur", 0.0)
    with pytest.raises(TypeError, match=r"\(B, C, H, W\)"):
        corrupt(torch.zeros(8, 8), "blur")
