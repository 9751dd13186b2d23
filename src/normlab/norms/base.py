"""The `Norm` base class and the `NormInfo` facts every normalization declares.

Every norm in normlab has one constructor shape and one call:

    Norm(dim, *, eps=..., affine=True, device=None, dtype=None, **method_kwargs)
    norm(x, mask=None)      # x: (..., dim) floating point; mask: x.shape[:-1], True on real tokens

The base class validates the input once, so a wrong last dimension, an integer tensor or a mask of
the wrong shape fails with a message that names the problem, whatever the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from normlab.functional import compute_dtype

Stats = Literal["token", "batch", "none"]
Fold = Literal["op", "affine", "none"]


@dataclass(frozen=True)
class Squash:
    """A bounded elementwise function of a scaled input: y = γ ⊙ fn(a·x) + β.

    Declared by elementwise norms built on one (DyT: tanh), so that diagnostics can measure how
    much of the input lands on its flat ends, where almost no gradient passes.

    Attributes:
        fn: the function ("tanh").
        gain: the name of the scalar a among the norm's `NormInfo.scalars`.
    """

    fn: Literal["tanh"]
    gain: str


@dataclass(frozen=True)
class NormInfo:
    """Facts about a normalization method that surgery, the bench and the tests read.

    Attributes:
        family: the file/family the norm belongs to ("layer", "rms", "batch", "elementwise",
            "group", "identity").
        stats: the statistics axis. "token": reductions over the channels of each token;
            "batch": per-channel reductions over tokens of the batch (padding excluded);
            "none": elementwise or scalar, no statistics.
        fold: what can be merged into an adjacent Linear at inference. "op": in eval mode the
            whole norm is a per-channel affine map `y = a*x + b` (see `Norm.eval_affine`);
            "affine": only the learnable scale/shift folds, the normalization itself stays;
            "none": nothing folds exactly.
        has_running_stats: eval mode uses statistics accumulated in training.
        approx_backward: the method defines its own backward that is deliberately not the
            exact gradient of its forward (e.g. PowerNorm, UN); such norms are tested against
            their specified backward instead of `gradcheck`.
        paper: short citation, "Title (Authors, Venue Year)".
        scalars: names of the norm's learned 0-d tensors (parameters or properties) that
            diagnostics record at every call (DyT: ("alpha",)); see `Norm.recorded_scalars`.
        squash: the bounded function the norm applies elementwise (`Squash`), or None.
    """

    family: str
    stats: Stats
    fold: Fold
    paper: str
    has_running_stats: bool = False
    approx_backward: bool = False
    scalars: tuple[str, ...] = ()
    squash: Squash | None = None

    def __post_init__(self) -> None:
        if self.squash is not None and self.squash.gain not in self.scalars:
            raise ValueError(
                f"NormInfo.squash.gain {self.squash.gain!r} must be one of the declared "
                f"scalars {self.scalars}"
            )

    @property
    def foldable(self) -> bool:
        """True when the whole norm becomes a per-channel affine map at inference."""
        return self.fold == "op"


class Norm(nn.Module):
    """Base class: input validation, fp32 statistics, the `forward(x, mask=None)` contract.

    Subclasses set `info` and implement `_normalize(x, mask)`, where `x` has already been checked
    and `mask` is either None or a bool tensor of shape `x.shape[:-1]`. Token-wise and
    elementwise norms ignore `mask`; batch-statistics norms must not count padded tokens.

    Running statistics (`register_stats`) are kept in the statistics dtype whatever the module
    dtype: float32 for a float16/bfloat16 module, else the module's float dtype. `.half()`,
    `.to(torch.bfloat16)` and the like convert the parameters and leave those buffers in
    float32, values untouched; `.double()` makes them float64. An exponential moving average
    stored in float16 would round each update away (and overflow past 65504).
    """

    info: ClassVar[NormInfo]
    name: ClassVar[str] = ""  # set by `register_norm`
    _stat_names: tuple[str, ...] = ()  # buffers registered by `register_stats`
    # The gain is γ = weight_offset + weight: 1.0 for a zero-centred weight (Gemma's 1 + w),
    # 0.0 for an ordinary one. Surgery reads γ through it (`zero_centre` sets it).
    weight_offset: float = 0.0

    def __init__(self, dim: int, *, eps: float, affine: bool = True) -> None:
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"{type(self).__name__}: dim must be a positive int, got {dim!r}")
        if not eps >= 0:
            raise ValueError(f"{type(self).__name__}: eps must be >= 0, got {eps!r}")
        self.dim = dim
        self.eps = float(eps)
        self.affine = bool(affine)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self._check_input(x, mask)
        return self._normalize(x, mask)

    @classmethod
    def example_kwargs(cls, dim: int) -> dict[str, Any]:
        """Values for the constructor arguments without a default, for code that builds every
        registered norm at width `dim` (`normlab zoo`, the contract tests):
        `make_norm(name, dim, **cls.example_kwargs(dim))`. Empty unless the method requires
        an argument (`gatedrmsnorm`'s group_size)."""
        return {}

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        raise NotImplementedError

    def eval_affine(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """The per-channel `(scale, shift)` this norm equals in eval mode: y = scale*x + shift.

        Defined only for norms whose `info.fold == "op"`; surgery folds it into a Linear.
        Both are detached (C,) tensors on the module's device, in its statistics dtype (float32
        for a half module), or on `device`/in `dtype` when given. A norm without parameters or
        buffers (identity) has no device of its own: it gives CPU tensors in the default dtype
        unless `device`/`dtype` say otherwise.
        """
        if not self.info.foldable:
            raise TypeError(
                f"{type(self).__name__} ({self.name!r}) is not an affine map at inference "
                f"(info.fold={self.info.fold!r}); only norms with fold='op' have eval_affine()"
            )
        with torch.no_grad():
            scale, shift = self._eval_affine()
        return scale.to(device=device, dtype=dtype), shift.to(device=device, dtype=dtype)

    def _eval_affine(self) -> tuple[Tensor, Tensor]:
        """`eval_affine` of a fold == "op" norm, before detaching and moving."""
        raise NotImplementedError

    def recorded_scalars(self) -> dict[str, float]:
        """The current value of each scalar `info.scalars` declares, by name."""
        return {name: float(getattr(self, name).detach()) for name in self.info.scalars}

    def register_stats(self, name: str, tensor: Tensor) -> None:
        """Register `tensor` as the running-statistics buffer `name`, in the statistics dtype.

        A float16/bfloat16 tensor is stored as float32 (see the class docstring); the buffer
        keeps that dtype when the module is converted.
        """
        self.register_buffer(name, tensor.to(compute_dtype(tensor.dtype)))
        self._stat_names = (*self._stat_names, name)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Norm:
        # `fn` (a dtype or device conversion) reaches every buffer; statistics converted to a
        # half dtype are restored from their previous values in the statistics dtype.
        before = {name: self._buffers[name] for name in self._stat_names}
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers[name]
            want = compute_dtype(new.dtype)
            if new.dtype != want:
                self._buffers[name] = old.to(device=new.device, dtype=want)
        return self

    def unit_interval(self, label: str, value: float, meaning: str = "") -> float:
        """`value` as a float after checking 0 <= value <= 1 (ValueError naming `label`).

        For momenta and EMA factors; `meaning`, if given, explains the setting in the error.
        """
        if not 0.0 <= value <= 1.0:
            why = f" ({meaning})" if meaning else ""
            raise ValueError(
                f"{self.name or type(self).__name__}: {label} must be in [0, 1]{why}, "
                f"got {value!r}"
            )
        return float(value)

    def _check_input(self, x: Tensor, mask: Tensor | None) -> None:
        cls = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{cls}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{cls}: expected a floating-point tensor, got dtype {x.dtype}")
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{cls}: expected input of shape (..., {self.dim}), got {tuple(x.shape)} "
                f"(the last dimension must equal dim={self.dim})"
            )
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
                raise TypeError(f"{cls}: mask must be a bool tensor (True = real token), got {got}")
            if mask.shape != x.shape[:-1]:
                raise ValueError(
                    f"{cls}: mask must have shape x.shape[:-1] = {tuple(x.shape[:-1])}, "
                    f"got {tuple(mask.shape)}"
                )

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps:g}, affine={self.affine}"


def affine_params(
    norm: Norm, shape: int | tuple[int, ...], *, bias: bool, device=None, dtype=None
) -> None:
    """Create `weight` (ones) and, if `bias`, `bias` (zeros) on `norm` when it is affine.

    Non-affine norms get `None` attributes so `forward` code can test `self.weight is None`.
    """
    if norm.affine:
        norm.weight = nn.Parameter(torch.ones(shape, device=device, dtype=dtype))
        if bias:
            norm.bias = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
        else:
            norm.register_parameter("bias", None)
    else:
        norm.register_parameter("weight", None)
        norm.register_parameter("bias", None)


def zero_centre(norm: Norm, enabled: bool) -> None:
    """Store `norm.weight` zero-centred when `enabled`: w starts at 0 and the norm multiplies by
    1 + w (`weight_offset` = 1), Gemma's convention and TransformerEngine's
    `zero_centered_gamma`. A norm without a weight has nothing to centre."""
    if enabled and norm.weight is not None:
        with torch.no_grad():
            norm.weight.zero_()
        norm.weight_offset = 1.0


def hold_state(ctx: Any, **state: Any) -> None:
    """Keep running state on an autograd `ctx` by reference, for a backward that reads and
    advances it in place.

    `ctx.save_for_backward` would record the tensors' versions, so the second backward through
    the same module (whose state the first one advanced) would fail autograd's in-place check.
    """
    for name, value in state.items():
        setattr(ctx, name, value)
