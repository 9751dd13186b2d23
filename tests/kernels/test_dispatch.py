"""Backend selection, input validation and import hygiene of `normlab.kernels`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from normlab import kernels
from normlab.kernels import backend as B
from normlab.kernels import cpu, dispatch


def _spy(monkeypatch):
    """Record which implementation module each call reaches."""
    seen = []
    for mod, name in ((dispatch.fast, "torch"), (dispatch.reference, "reference")):
        orig = mod.rms_norm

        def wrapped(*a, _orig=orig, _name=name, **k):
            seen.append(_name)
            return _orig(*a, **k)

        monkeypatch.setattr(mod, "rms_norm", wrapped)
    orig_compiled = dispatch._compiled
    monkeypatch.setattr(
        dispatch, "_compiled", lambda name: (seen.append(name), orig_compiled(name))[1]
    )
    return seen


def test_precedence_argument_context_env_auto(monkeypatch):
    seen = _spy(monkeypatch)
    x = torch.randn(2, 8)
    monkeypatch.delenv(B.ENV_VAR, raising=False)
    kernels.rms_norm(x)
    assert seen[-1] == ("cpp" if cpu.available() else "torch")  # auto on CPU
    monkeypatch.setenv(B.ENV_VAR, "reference")
    kernels.rms_norm(x)
    assert seen[-1] == "reference"
    with kernels.use_backend("torch"):
        kernels.rms_norm(x)
        assert seen[-1] == "torch"
        kernels.rms_norm(x, backend="reference")
        assert seen[-1] == "reference"
    kernels.rms_norm(x)
    assert seen[-1] == "reference"


def test_auto_keeps_atens_layer_norm_on_cpu(monkeypatch):
    seen = _spy(monkeypatch)
    monkeypatch.delenv(B.ENV_VAR, raising=False)
    x, r = torch.randn(2, 8), torch.randn(2, 8)
    kernels.layer_norm(x)
    assert seen == []  # neither compiled backend nor the reference: ATen through "torch"
    kernels.add_layer_norm(x, r)
    assert seen == (["cpp"] if cpu.available() else [])


def test_unknown_backend_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="auto, torch, cpp, triton, reference"):
        kernels.rms_norm(torch.randn(2, 4), backend="cuda")
    with pytest.raises(ValueError, match="unknown kernel backend"), kernels.use_backend("fast"):
        pass
    monkeypatch.setenv(B.ENV_VAR, "nope")
    with pytest.raises(ValueError, match=B.ENV_VAR):
        kernels.rms_norm(torch.randn(2, 4))


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if B.triton_available():
        with pytest.raises(ValueError, match="CUDA"):
            kernels.layer_norm(torch.randn(2, 4), backend="triton")
    else:
        with pytest.raises(RuntimeError, match="needs the triton package"):
            kernels.layer_norm(torch.randn(2, 4), backend="triton")


def test_triton_refuses_float64(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(B, "triton_available", lambda: True)
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    with pytest.raises(ValueError, match="float16/bfloat16/float32"):
        kernels.rms_norm(torch.randn(2, 4, dtype=torch.float64), backend="triton")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: kernels.rms_norm(torch.ones(2, 4, dtype=torch.long)), TypeError, "floating"),
        (lambda: kernels.rms_norm(torch.ones(2, 4), torch.ones(5)), ValueError, r"\(4,\)"),
        (lambda: kernels.layer_norm(torch.ones(2, 4), None, torch.ones(2, 4)), ValueError,
         "bias"),
        (lambda: kernels.rms_norm(torch.ones(2, 4), eps=-1.0), ValueError, "eps"),
        (lambda: kernels.rms_norm(torch.ones(())), ValueError, "shape"),
        (lambda: kernels.dyt(torch.ones(2, 4), torch.ones(2)), ValueError, "alpha"),
        (lambda: kernels.dyt(torch.ones(2, 4), "0.5"), TypeError, "alpha"),
        (lambda: kernels.add_rms_norm(torch.ones(2, 4), torch.ones(2, 3)), ValueError,
         "residual"),
        (lambda: kernels.add_layer_norm(torch.ones(2, 4), torch.ones(2, 4).half()), ValueError,
         "dtype"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_import_does_not_import_triton():
    code = (
        "import sys, torch, normlab, normlab.kernels, normlab.norms\n"
        "normlab.kernels.rms_norm(torch.randn(2, 8))\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_residual_ops_return_the_new_residual():
    x, r = torch.randn(3, 16), torch.randn(3, 16)
    for name in ("torch", "reference", *(["cpp"] if cpu.available() else [])):
        y, h = kernels.add_layer_norm(x, r, backend=name)
        torch.testing.assert_close(h, x + r)
        torch.testing.assert_close(y, kernels.layer_norm(x + r, backend="reference"))
