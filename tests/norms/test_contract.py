"""The contract every registered norm keeps, parametrized over `list_norms()` and the variants
that change a norm's parameters (zero-centred γ, the gated norm's other order).

A new norm is tested here as soon as it is registered: gradients (fp64 gradcheck, parameters
included), half precision with fp32 statistics, shapes, state_dict round trip, train/eval
behaviour, padding, the fold claim and bad input.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from tests.norms.helpers import make, norm_class, perturbed, random_mask
from torch.func import functional_call

from normlab import NormInfo, get_norm_class, list_norms, make_norm, register_norm
from normlab.diagnostics import metrics
from normlab.norms.base import Norm

VARIANTS = [
    functools.partial(get_norm_class("rmsnorm"), zero_centered_gamma=True),
    functools.partial(get_norm_class("layernorm"), zero_centered_gamma=True),
    functools.partial(get_norm_class("gatedrmsnorm"), norm_before_gate=True),
]
NAMES = [*list_norms(), *(pytest.param(v, id=f"{v.func.name}-{'-'.join(v.keywords)}")
                          for v in VARIANTS)]
STATEFUL = [n for n in list_norms() if get_norm_class(n).info.has_running_stats]
DIM = 16

# Switching PRepBN to eval mid-schedule is what these tests do on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:prepbn. switching to eval")


def build(name: str, dim: int = DIM, *, dtype=torch.float32, seed: int = 0) -> Norm:
    """A norm whose parameters are perturbed away from their init, so an ignored γ/β shows."""
    return perturbed(name, dim, scale=0.1, dtype=dtype, seed=seed)


def warm_up(norm: Norm, steps: int = 3, shape=(4, 5, DIM), dtype=torch.float32) -> Norm:
    """Run a few training forwards so running statistics and counters move."""
    norm.train()
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(*shape, generator=gen, dtype=dtype) * 2 + 0.5
        norm(x.requires_grad_(True)).square().sum().backward()
    norm.zero_grad()
    return norm


def state(norm: Norm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in norm.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"state {k!r} differs")


def padding_mask(shape) -> torch.Tensor:
    return random_mask(shape, seed=2, pad=0.3)


def float_buffers(norm: Norm) -> dict[str, torch.Tensor]:
    """The floating-point buffers: for a running-statistics norm, its running statistics."""
    return {k: b for k, b in norm.named_buffers() if b.is_floating_point()}


@pytest.mark.parametrize("name", NAMES)
def test_declares_facts(name):
    cls = norm_class(name)
    assert cls.name == (name if isinstance(name, str) else name.func.name)
    assert isinstance(cls.info, NormInfo)
    assert cls.info.stats in ("token", "batch", "none")
    assert cls.info.fold in ("op", "affine", "none")
    assert cls.info.paper
    assert cls.__doc__ and len(cls.__doc__.strip()) > 80, "the docstring is the spec"


@pytest.mark.parametrize("name", NAMES)
def test_declared_scalars_and_squash(name):
    """`info.scalars` are the 0-d tensors `recorded_scalars` reports; a declared `Squash` is
    what the forward computes with γ = 1, β = 0: y = fn(gain·x), whatever the gain."""
    norm = make(name, DIM, dtype=torch.float64)
    declared = norm.info.scalars
    values = norm.recorded_scalars()
    assert list(values) == list(declared)
    for key in declared:
        assert getattr(norm, key).dim() == 0 and values[key] == getattr(norm, key).item()
    squash = norm.info.squash
    if squash is None:
        return
    x = torch.randn(4, 5, DIM, dtype=torch.float64) * 3
    for factor in (1.0, 2.5):
        with torch.no_grad():
            getattr(norm, squash.gain).mul_(factor)
        gain = norm.recorded_scalars()[squash.gain]
        torch.testing.assert_close(norm(x), metrics.SQUASHES[squash.fn](gain * x))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_fp64(name, masked):
    """Input and parameter gradients equal finite differences (train mode, fp64)."""
    norm = build(name, 8, dtype=torch.float64)
    if norm.info.approx_backward:
        pytest.skip("backward is approximate by design; tested against its specification")
    if masked and norm.info.stats != "batch":
        pytest.skip("the mask only matters to batch statistics")
    norm.train()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    mask = padding_mask((2, 3)) if masked else None
    names = [n for n, _ in norm.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in norm.named_parameters()]

    def fn(x, *values):
        fresh = copy.deepcopy(norm)  # stateful counters must not advance between evaluations
        return functional_call(fresh, dict(zip(names, values, strict=True)), (x,), {"mask": mask})

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", STATEFUL)
def test_gradcheck_fp64_eval(name):
    norm = warm_up(build(name, 8, dtype=torch.float64), shape=(4, 5, 8), dtype=torch.float64)
    norm.eval()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: copy.deepcopy(norm)(x), (x,), eps=1e-6, atol=1e-5)


HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("built_in", ["float32", "half"])
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_uses_fp32_statistics(name, dtype, built_in):
    """Half inputs give half outputs close to the fp32 result, even where x² overflows fp16,
    whether the norm itself is float32 or built in the half dtype (parameters in half)."""
    if built_in == "half":
        norm = build(name, dtype=dtype)
        assert all(p.dtype == dtype for p in norm.parameters())
        reference = make(name, DIM)  # the same (rounded) parameters, in float32
        reference.load_state_dict(norm.state_dict())
    else:
        norm = reference = build(name)
    for scale in (1.0, 300.0):  # 300² = 9e4 > 65504: statistics in fp16 would overflow
        x = torch.randn(2, 5, DIM) * scale
        expected = copy.deepcopy(reference)(x)
        got = copy.deepcopy(norm)(x.to(dtype))
        assert got.dtype == dtype
        assert torch.isfinite(got).all(), f"non-finite output at input scale {scale}"
        tol = 2e-2 if dtype == torch.float16 else 6e-2
        ref = expected.to(dtype).float()
        torch.testing.assert_close(got.float(), ref, atol=tol * ref.abs().max().item() + tol,
                                   rtol=tol)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", STATEFUL)
def test_running_statistics_stay_fp32(name, dtype):
    """Built in a half dtype, trained on half inputs or converted with .to(half): the running
    statistics are float32 (a half EMA would round its updates away); .double() gives float64."""
    built = warm_up(make(name, DIM, dtype=dtype), dtype=dtype)
    assert float_buffers(built)
    assert {b.dtype for b in float_buffers(built).values()} == {torch.float32}
    trained = warm_up(build(name))
    before = {k: b.clone() for k, b in float_buffers(trained).items()}
    converted = copy.deepcopy(trained).to(dtype)
    assert all(p.dtype == dtype for p in converted.parameters())
    for key, value in float_buffers(converted).items():
        assert value.dtype == torch.float32, key
        assert torch.equal(value, before[key]), f"{key} lost precision in the conversion"
    doubled = copy.deepcopy(converted).double()
    assert {b.dtype for b in float_buffers(doubled).values()} == {torch.float64}
    assert {b.dtype for b in float_buffers(doubled.float()).values()} == {torch.float32}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_output_depends_on_input(name, mode):
    """Every token's output changes with the input: no default setting collapses a norm to a
    constant (e.g. groups of one channel, whose variance is 0)."""
    norm = warm_up(build(name))
    getattr(norm, mode)()
    gen = torch.Generator().manual_seed(3)
    a, b = (torch.randn(3, 4, DIM, generator=gen) * 2 + 0.5 for _ in range(2))
    ya, yb = copy.deepcopy(norm)(a), copy.deepcopy(norm)(b)
    change = (ya - yb).abs().amax(-1)  # per token
    assert (change > 1e-2).all(), f"{name} ({mode}): some token's output ignores its input"


@pytest.mark.parametrize("shape", [(3, 7, 33), (5, 33), (2, 3, 4, 33)])
@pytest.mark.parametrize("name", NAMES)
def test_any_leading_shape(name, shape):
    norm = build(name, 33)
    x = torch.randn(*shape)
    y = norm(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    norm.eval()
    assert norm(x).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    trained = warm_up(build(name))
    restored = make(name, DIM)
    restored.load_state_dict(trained.state_dict(), strict=True)
    assert_same_state(state(trained), state(restored))
    x = torch.randn(3, 4, DIM)
    for mode in ("train", "eval"):
        getattr(trained, mode)()
        getattr(restored, mode)()
        torch.testing.assert_close(copy.deepcopy(trained)(x), copy.deepcopy(restored)(x))


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval(name):
    norm = warm_up(build(name))
    x = torch.randn(3, 4, DIM)
    if not norm.info.has_running_stats:
        train_out = copy.deepcopy(norm).train()(x)
        torch.testing.assert_close(norm.eval()(x), train_out)
        return
    norm.eval()
    before = state(norm)
    full = norm(x)
    assert_same_state(before, state(norm))  # eval never updates statistics
    # In eval a sample's output depends on that sample alone, not on the rest of the batch
    # (token-level locality of fold == "op" norms follows from test_fold_claim).
    torch.testing.assert_close(norm(x[1:2]), full[1:2], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(norm(x[2]), full[2], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_padding_is_ignored(name):
    """Garbage at padded positions changes no real output, gradient or running statistic."""
    norm = build(name).train()
    x = torch.randn(3, 6, DIM)
    mask = padding_mask((3, 6))
    garbage = torch.where(mask[..., None], x, 1e3 * torch.randn_like(x))
    weights = torch.randn_like(x)
    outs, grads, states = [], [], []
    for inp in (x, garbage):
        inp = inp.clone().requires_grad_(True)
        m = copy.deepcopy(norm)
        for _ in range(2):  # a second call sees the statistics the first one updated
            out = m(inp, mask=mask)
        (out[mask] * weights[mask]).sum().backward()
        outs.append(out[mask].detach())
        grads.append(inp.grad[mask])
        states.append(state(m))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], atol=1e-5, rtol=1e-5,
                                   msg=f"padding leaked into {k!r}")


@pytest.mark.parametrize("name", NAMES)
def test_fold_claim(name):
    """fold == 'op' is proven: in eval mode the norm is exactly y = scale*x + shift."""
    norm = warm_up(build(name)).eval()
    if not norm.info.foldable:
        with pytest.raises(TypeError, match="not an affine map"):
            norm.eval_affine()
        return
    scale, shift = norm.eval_affine()
    assert scale.shape == shift.shape == (DIM,)
    assert scale.dtype == shift.dtype == torch.float32
    assert not (scale.requires_grad or shift.requires_grad)
    x = torch.randn(3, 4, DIM)
    torch.testing.assert_close(norm(x), scale * x + shift, atol=1e-5, rtol=1e-5)
    wide = norm.eval_affine(dtype=torch.float64, device="cpu")
    assert [t.dtype for t in wide] == [torch.float64] * 2
    torch.testing.assert_close(wide, (scale.double(), shift.double()))
    half = build(name, dtype=torch.float16).eval()  # statistics dtype: float32 for half modules
    assert {t.dtype for t in half.eval_affine()} == {torch.float32}


@pytest.mark.parametrize("name", NAMES)
def test_constructor_places_parameters(name):
    norm = make(name, DIM, dtype=torch.float64)
    for pname, p in norm.named_parameters():
        assert p.dtype == torch.float64, pname
    y = norm(torch.randn(2, 3, DIM, dtype=torch.float64))
    assert y.dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_clear_errors(name):
    norm = make(name, DIM)
    x = torch.randn(2, 3, DIM)
    with pytest.raises(ValueError, match=rf"\(\.\.\., {DIM}\)"):
        norm(torch.randn(2, 3, DIM + 1))
    with pytest.raises(TypeError, match="floating-point"):
        norm(torch.ones(2, 3, DIM, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must have shape"):
        norm(x, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool"):
        norm(x, mask=torch.ones(2, 3))
    with pytest.raises(TypeError, match="unknown argument"):
        make(name, DIM, not_an_option=1)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        make(name, 0)


def test_make_norm_specs():
    assert type(make_norm("LayerNorm", 8)).name == "layernorm"
    cls = get_norm_class("rmsnorm")
    assert isinstance(make_norm(cls, 8), cls)
    built = make_norm(functools.partial(cls, eps=1e-3), 8)
    assert isinstance(built, cls) and built.eps == 1e-3
    with pytest.raises(ValueError, match=r"known norms: .*layernorm.*rmsnorm"):
        make_norm("no-such-norm", 8)
    with pytest.raises(TypeError, match="spec must be"):
        make_norm(3, 8)


def test_register_norm_refuses_duplicates_and_non_norms():
    with pytest.raises(ValueError, match="already registered"):

        @register_norm("LayerNorm")
        class Clash(Norm):
            info = NormInfo(family="x", stats="none", fold="none", paper="x")

    with pytest.raises(TypeError, match="Norm subclass"):
        register_norm("not-a-norm")(dict)
    assert "not-a-norm" not in list_norms()
