"""The weight edits, checked against the formulas they implement: fold γ/β, recentre, compress
(Jiang, Gu, Zhu, Pan, "Pre-RMSNorm and Pre-CRMSNorm Transformers", NeurIPS 2023)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from normlab.surgery.adapters.base import Port
from normlab.surgery.ports import (
    compress_reader,
    compress_writer,
    fold_into_reader,
    recentre_writer,
)

D = 8


def _holder(kind: str, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    root = nn.Module()
    root.m = nn.Linear(D, 5, bias=bias) if kind == "linear" else Conv1D(5, D)
    with torch.no_grad():
        root.m.weight.normal_()
        if root.m.bias is not None:
            root.m.bias.normal_()
    return root.double()


@pytest.mark.parametrize(("kind", "bias"), [("linear", True), ("linear", False), ("conv1d", True)])
def test_fold_into_reader_moves_the_affine(kind, bias):
    root = _holder(kind, bias)
    n = torch.randn(4, D, dtype=torch.float64)
    gamma, beta = torch.rand(D, dtype=torch.float64) + 0.5, torch.randn(D, dtype=torch.float64)
    expected = root.m(gamma * n + beta)
    detail = fold_into_reader(root, Port("m", kind), gamma, beta)
    torch.testing.assert_close(root.m(n), expected)
    assert "γ" in detail and "β" in detail
    assert (root.m.bias is not None) and (root.m.bias.dtype == torch.float64)


def test_fold_into_reader_moves_the_vectors_to_the_weight_s_device():
    # eval_affine() of a norm without tensors (identity) is on the CPU whatever the model's
    # device; the meta device stands in for an accelerator here
    root = nn.Module()
    root.m = nn.Linear(D, 5, device="meta")
    fold_into_reader(root, Port("m", "linear"), torch.full((D,), 2.0), torch.ones(D))
    assert root.m.weight.device.type == "meta" and root.m.bias.device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_fold_into_reader_keeps_the_weight_dtype_and_rounds_once(dtype):
    root = _holder("linear").to(dtype)
    w, b = root.m.weight.double(), root.m.bias.double()
    gamma, beta = torch.rand(D) + 0.5, torch.randn(D)  # float32, as eval_affine gives
    fold_into_reader(root, Port("m", "linear"), gamma, beta)
    assert root.m.weight.dtype == root.m.bias.dtype == dtype
    # W·diag(γ) and b + Wβ computed in float64, rounded to the weight dtype once
    torch.testing.assert_close(root.m.weight, (w * gamma.double()).to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(root.m.bias, (b + w @ beta.double()).to(dtype))


def test_recentre_writer_gives_zero_mean_outputs():
    root = nn.Module()
    root.m = nn.Linear(5, D).double()
    recentre_writer(root, Port("m", "linear"))
    y = root.m(torch.randn(3, 5, dtype=torch.float64))
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_compressed_reader_reads_the_first_d_minus_1_channels(kind):
    root = _holder(kind)
    n = torch.randn(4, D, dtype=torch.float64)
    n = n - n.mean(-1, keepdim=True)  # the invariant compression needs
    expected = root.m(n)
    compress_reader(root, Port("m", kind))
    torch.testing.assert_close(root.m(n[..., : D - 1]), expected)


def test_compressed_writer_keeps_the_first_channels():
    root = nn.Module()
    root.m = Conv1D(D, 5).double()
    x = torch.randn(2, 5, dtype=torch.float64)
    full = root.m(x)
    compress_writer(root, Port("m", "conv1d"))
    torch.testing.assert_close(root.m(x), full[..., : D - 1])
    assert root.m.nf == D - 1


def test_a_port_that_cannot_read_is_refused():
    root = nn.Module()
    root.e = nn.Embedding(3, D)
    with pytest.raises(ValueError, match="cannot read a norm"):
        fold_into_reader(root, Port("e", "embedding"), torch.ones(D), None)
