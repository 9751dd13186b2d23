"""The Transformer block: an attention and an MLP sublayer wired by a `Placement`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.blocks.hyper import HyperConnection
from normlab.blocks.placement import SUBLAYERS, Architecture, Placement, resolve_placement
from normlab.norms import Norm, make_norm


def gpas(x: Tensor, gate: Tensor) -> Tensor:
    """Gradient-preserving activation scaling: x − SiLU(a)·sg(x).

    The forward value is (1 − SiLU(a))·x; the gradient to x is the identity (the downscaling is
    invisible to upstream layers) and ∂L/∂a = −SiLU′(a)·Σ(g ⊙ x).

    Paper: "GPAS: Accelerating Convergence of LLM Pretraining via Gradient-Preserving Activation
    Scaling" (Chen et al., NeurIPS 2025).
    """
    return x - F.silu(gate).to(x.dtype) * x.detach()


def attention_mask(mask: Tensor | None, causal: bool) -> Tensor | None:
    """The boolean (B, 1, T, T) mask of keys each query may attend to, or None if `mask` is None.

    A real query attends to the real keys (mask True), earlier ones only when `causal`. A padded
    query also attends to itself, so no softmax row is empty (its output is never used).
    """
    if mask is None:
        return None
    length = mask.shape[-1]
    allowed = mask[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=mask.device)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    return allowed


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`.

        y = W_O · concat_h softmax(q_h k_hᵀ / √d_h + mask) v_h,   then y ← γ_h ⊙ y per head chunk

    q, k, v and out are separate Linears (`q_proj`, `k_proj`, `v_proj`, `out_proj`) so that
    init recipes can address them (DeepNorm scales v and out but not q and k).

    Args:
        dim: model width D; heads: H, with D divisible by H.
        causal: each token attends to itself and earlier tokens only.
        bias: Linear biases.
        dropout: attention-probability dropout in training.
        head_scale: NormFormer's learnable per-head scale γ_h (init 1). It multiplies the h-th
            chunk of D/H channels *after* `out_proj`, as the fairseq code does; the paper writes
            it before W_O. The two are not equivalent; normlab follows the released code.
        qkv_norm: HybridNorm's QKV-norm: `qkv_norm(d)` builds a norm of width d = D/H for each
            of q, k and v (`q_norm`, `k_norm`, `v_norm`), applied to every head (one weight
            shared by the heads) before attention. None: no norm inside attention.
    """

    def __init__(
        self, dim: int, heads: int, *, causal: bool, bias: bool = True, dropout: float = 0.0,
        head_scale: bool = False, qkv_norm: Callable[[int], Norm] | None = None,
    ) -> None:
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.head_scale = nn.Parameter(torch.ones(heads)) if head_scale else None
        self.q_norm: Norm | None = None
        self.k_norm: Norm | None = None
        self.v_norm: Norm | None = None
        if qkv_norm is not None:
            self.q_norm, self.k_norm, self.v_norm = (qkv_norm(dim // heads) for _ in range(3))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x, mask)
        allowed = attention_mask(mask, self.causal)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, is_causal=self.causal and allowed is None,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, D/H)
        y = self.out_proj(y.transpose(1, 2).reshape(b, t, -1))
        if self.head_scale is not None:
            y = (y.view(b, t, self.heads, -1) * self.head_scale.to(y.dtype)[:, None]).flatten(2)
        return y

    def qkv(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values, each (B, H, T, D/H), QKV-normed per head if asked."""
        b, t, _ = x.shape  # the stream may be narrower than the heads (Pre-CRMSNorm: D-1)
        q, k, v = (p(x).view(b, t, self.heads, -1) for p in self.projections)  # (B, T, H, d)
        if self.v_norm is not None:
            norms = (self.q_norm, self.k_norm, self.v_norm)
            q, k, v = (per_head_norm(n, y, mask) for n, y in zip(norms, (q, k, v), strict=True))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    @property
    def projections(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        return self.q_proj, self.k_proj, self.v_proj


def per_head_norm(norm: Norm, y: Tensor, mask: Tensor | None) -> Tensor:
    """`norm` over the last axis of y (B, T, n, d): every head of every token on its own."""
    return norm(y, None if mask is None else mask[..., None].expand(y.shape[:-1]))


class MLP(nn.Module):
    """y = fc2( N( gelu( fc1(x) ) ) ), N the optional "hidden" norm of width D_ff (NormFormer)."""

    def __init__(self, dim: int, hidden: int, *, bias: bool = True, norm: Norm | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.norm = norm
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = F.gelu(self.fc1(x))
        if self.norm is not None:
            h = self.norm(h, mask)
        return self.fc2(h)


class Block(nn.Module):
    """A Transformer block whose norms, scales and gates follow a `Placement`.

    Each sublayer F ∈ (Attn, MLP), in order, computes (absent slots and gates are skipped)

        h = branch_gate · dropout( N_branch_out( F( s · N_pre(x) ) ) )
        y = stream_gate( N_post( α · residual_gate · x + h ) )

    with s = `placement.input_scale` and α = `placement.residual_scale`. Every norm gets the
    padding mask (True = real token), so batch-statistics norms never count padding. With
    `placement.hyper` the block maps n streams (B, T, n, D) to n streams: each sublayer reads
    its input from them and writes its output h back (`HyperConnection`) in place of the add.
    With `placement.qkv_norm` the attention normalizes each head's q, k and v with the block's
    norm (the attention factory must take `qkv_norm`, as `Attention` and `GroupedAttention` do).

    The sublayers are built by `attention(dim, heads, *, causal, bias, dropout, head_scale)`
    and `mlp(dim, hidden, *, bias, norm)`: `Attention` and `MLP` by default; the Llama passes
    `GroupedAttention` (RoPE, GQA, QK-norm) and `SwiGLU` through the same wiring.

    Attributes:
        norms: ModuleDict of the sublayer norms, keys "<sublayer>_<slot>" (e.g. "attn_pre"); the
            "mlp_hidden" norm lives in `mlp.norm` (see `norm_slots`).
        gates: ParameterDict of the learnable gates, keys `Gate.key(sublayer)`.
        hyper: ModuleDict of the two `HyperConnection`s, keys "attn" and "mlp", or None.
    """

    def __init__(
        self, dim: int, heads: int, placement: Placement, *, norm: Any = "layernorm",
        norm_kwargs: Mapping[str, Any] | None = None,
        sublayer_norm_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        mlp_ratio: float = 4.0, causal: bool = True, bias: bool = True, dropout: float = 0.0,
        attention: Callable[..., nn.Module] = Attention, mlp: Callable[..., nn.Module] = MLP,
    ) -> None:
        super().__init__()
        check_shape(dim, heads, mlp_ratio, dropout)
        if not isinstance(placement, Placement):
            raise TypeError(f"placement must be a Placement, got {type(placement).__name__}")
        unknown = set(sublayer_norm_kwargs or {}) - set(SUBLAYERS)
        if unknown:
            raise ValueError(f"sublayer_norm_kwargs keys must be in {SUBLAYERS}, got {unknown}")
        self.placement = placement
        hidden = round(mlp_ratio * dim)

        def build(sublayer: str, width: int) -> Norm:
            kwargs = {**(norm_kwargs or {}), **(sublayer_norm_kwargs or {}).get(sublayer, {})}
            return make_norm(norm, width, **kwargs)

        self.norms = nn.ModuleDict({
            f"{sub}_{slot}": build(sub, dim)
            for sub in SUBLAYERS for slot in placement.slots(sub) if slot != "hidden"
        })
        qkv = {"qkv_norm": partial(build, "attn")} if placement.qkv_norm else {}
        self.attn = attention(
            dim, heads, causal=causal, bias=bias, dropout=dropout,
            head_scale=placement.head_scale, **qkv,
        )
        hidden_norm = build("mlp", hidden) if "hidden" in placement.mlp else None
        self.mlp = mlp(dim, hidden, bias=bias, norm=hidden_norm)
        self.gates = nn.ParameterDict({
            key: nn.Parameter(torch.full((dim,) if g.per_channel else (), float(g.init)))
            for g in placement.gates for key in dict.fromkeys(g.key(s) for s in g.sublayers)
        })
        self.dropout = nn.Dropout(dropout)
        hc = placement.hyper
        self.hyper = None if hc is None else nn.ModuleDict({
            sub: HyperConnection(dim, hc.streams, dynamic=hc.dynamic, layer=hc.layer + i)
            for i, sub in enumerate(SUBLAYERS)
        })

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self._sublayer("attn", self.attn, x, mask)
        return self._sublayer("mlp", self.mlp, x, mask)

    def _sublayer(self, name: str, branch: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.hyper is not None:
            h, rest, beta = self.hyper[name].read(x, mask)
            return self.hyper[name].write(self._branch(name, branch, h, mask), rest, beta)
        y = self.placement.residual_scale * self._gate(name, "residual", x)
        y = y + self._branch(name, branch, x, mask)
        return self._gate(name, "stream", self._norm(name, "post", y, mask))

    def _branch(self, name: str, branch: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
        h = branch(self.placement.input_scale * self._norm(name, "pre", x, mask), mask)
        return self._gate(name, "branch", self.dropout(self._norm(name, "branch_out", h, mask)))

    def _norm(self, sublayer: str, slot: str, x: Tensor, mask: Tensor | None) -> Tensor:
        key = f"{sublayer}_{slot}"
        return self.norms[key](x, mask) if key in self.norms else x

    def _gate(self, sublayer: str, site: str, x: Tensor) -> Tensor:
        gate = self.placement.gate(sublayer, site)
        if gate is None:
            return x
        g = self.gates[gate.key(sublayer)]
        return gpas(x, g) if gate.fn == "gpas" else g.to(x.dtype) * x

    def norm_slots(self) -> dict[str, Norm]:
        """Every norm of the block by slot, "<sublayer>_<slot>", the MLP's hidden norm included."""
        slots = dict(self.norms.items())
        if self.mlp.norm is not None:
            slots["mlp_hidden"] = self.mlp.norm
        return slots


def check_shape(dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
    """ValueError naming the fix unless D and H are positive ints with H | D (head size D/H),
    the MLP width round(mlp_ratio·D) is positive and 0 <= dropout < 1."""
    for name, value in (("dim", dim), ("heads", heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if dim % heads:
        raise ValueError(f"dim={dim} must be divisible by heads={heads} (head size = dim/heads)")
    if not mlp_ratio > 0 or round(mlp_ratio * dim) < 1:
        raise ValueError(f"mlp_ratio must give a positive hidden width, got {mlp_ratio!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def make_block(
    dim: int, heads: int, *, scheme: str = "pre", norm: Any = "layernorm", layer_index: int = 0,
    depth: int = 1, norm_kwargs: Mapping[str, Any] | None = None,
    sublayer_norm_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    architecture: Architecture = "decoder", mlp_ratio: float = 4.0, bias: bool = True,
    dropout: float = 0.0, **placement_kwargs: Any,
) -> Block:
    """Block `layer_index` (0-based) of a `depth`-block stack under placement `scheme`.

    `norm` is anything `make_norm` takes (a registry name, a Norm class, a partial);
    `norm_kwargs` go to every norm, `sublayer_norm_kwargs["attn" | "mlp"]` to that sublayer's
    norms only. "decoder" blocks attend causally. `placement_kwargs` are the scheme's options.

        make_block(64, 4, scheme="lns", norm="rmsnorm", layer_index=3, depth=12)
    """
    placement = resolve_placement(
        scheme, layer_index, depth, architecture=architecture, **placement_kwargs
    )
    return Block(
        dim, heads, placement, norm=norm, norm_kwargs=norm_kwargs,
        sublayer_norm_kwargs=sublayer_norm_kwargs, mlp_ratio=mlp_ratio,
        causal=architecture == "decoder", bias=bias, dropout=dropout,
    )
