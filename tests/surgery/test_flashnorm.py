"""FlashNorm: a Linear that reads a folded-away RMSNorm or LayerNorm, 1/rms after the matmul,
against torch's F.rms_norm / F.layer_norm followed by F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normlab.surgery.flashnorm import deferred_reader

D, OUT = 24, 10


def _parts(dtype, bias: bool, beta: bool):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(OUT, D, generator=gen, dtype=dtype)
    b = torch.randn(OUT, generator=gen, dtype=dtype) if bias else None
    gamma = 1 + 0.5 * torch.randn(D, generator=gen, dtype=dtype)
    shift = torch.randn(D, generator=gen, dtype=dtype) if beta else None
    x = 3 + 2 * torch.randn(4, 7, D, generator=gen, dtype=dtype)  # a clear mean per token
    return w, b, gamma, shift, x


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("bias", [False, True])
def test_deferred_reader_equals_norm_then_linear_fp64(kind, bias):
    w, b, gamma, shift, x = _parts(torch.float64, bias, beta=kind == "layernorm")
    if kind == "rmsnorm":
        ref = F.linear(F.rms_norm(x, (D,), gamma, 1e-6), w, b)
    else:
        ref = F.linear(F.layer_norm(x, (D,), gamma, shift, 1e-6), w, b)
    new = deferred_reader(w, b, gamma, shift, eps=1e-6, center=kind == "layernorm")
    torch.testing.assert_close(new(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_takes_its_statistic_in_fp32(dtype):
    w, b, gamma, _, x = _parts(torch.float32, True, beta=False)
    ref = F.linear(F.rms_norm(x, (D,), gamma, 1e-6), w, b)
    new = deferred_reader(w.to(dtype), b.to(dtype), gamma, None, eps=1e-6, center=False)
    out = new(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    # a statistic taken in the half dtype itself would overflow fp16 here
    assert torch.isfinite(new(1000 * x.to(dtype))).all()
