"""Where the norms, scales and gates of a Transformer block go: placement as data.

A `Placement` describes one block. Each of its two sublayers (attention "attn", MLP "mlp") has
norm slots picked from

    "pre"         before the branch:          x + F(N(x))
    "hidden"      inside the MLP, after GELU:  fc2(N(gelu(fc1(·))))        (mlp only)
    "branch_out"  after the branch:           x + N(F(·))
    "post"        after the residual add:     N(x + F(·))

plus constant scales (the input scale s, LNS's 1/√ℓ; the residual scale α, DeepNorm's), learnable
`Gate`s, NormFormer's head-wise scale, per-head norms of the queries, keys and values
(HybridNorm's QKV-norm) and hyper-connections (`Hyper`: n residual streams in place of the
residual add). A `Layout` is a whole stack: one `Placement` per block,
the model-level norms (embedding, final) and the `InitSpec` that `init_weights` follows.

`SCHEMES` names the published layouts. A scheme is a function of the depth (and of options),
so per-layer rules such as Mix-LN's are data too; adding a scheme is one function decorated
with `register_scheme` (docs/placements.md, "How to add a scheme").

    resolve_layout("mix", depth=12).blocks[2].mlp          # ('post',)
    resolve_placement("lns", layer_index=3, depth=12).input_scale    # 1/√4 = 0.5
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from normlab.registry import Registry

Slot = Literal["pre", "hidden", "branch_out", "post"]
Sublayer = Literal["attn", "mlp"]
Architecture = Literal["decoder", "encoder"]

SLOTS: tuple[str, ...] = get_args(Slot)
SUBLAYERS: tuple[str, ...] = get_args(Sublayer)
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)


@dataclass(frozen=True)
class Gate:
    """A learnable multiplier in the residual path of a block.

    Sites, for a sublayer with branch F:

        "branch":    y = x + g·F(x)                   (ReZero, SkipInit)
        "residual":  y = g·x + F(x)                   (NormFormer's λ_resid, per channel)
        "stream":    y = G(x + F(x))                  after the add (GPAS)

    Functions: "scale" multiplies by g; "gpas" is GPAS's gradient-preserving downscale
    G(y) = y − SiLU(g)·sg(y), whose forward value is (1 − SiLU(g))·y and whose gradient to y is
    the identity (sg = stop-gradient).

    Attributes:
        site: where the gate acts (above).
        fn: "scale" or "gpas".
        init: the value of g at init (0 makes ReZero/SkipInit/GPAS blocks the identity).
        shared: one parameter for all `sublayers` (ReZero, GPAS) or one each (SkipInit).
        per_channel: g has shape (D,) instead of being a scalar.
        sublayers: the sublayers the gate acts on.
    """

    site: Literal["branch", "residual", "stream"]
    fn: Literal["scale", "gpas"] = "scale"
    init: float = 0.0
    shared: bool = True
    per_channel: bool = False
    sublayers: tuple[Sublayer, ...] = ("attn", "mlp")

    def __post_init__(self) -> None:
        if self.site not in ("branch", "residual", "stream"):
            raise ValueError(
                f"Gate.site must be 'branch', 'residual' or 'stream', got {self.site!r}"
            )
        if self.fn not in ("scale", "gpas"):
            raise ValueError(f"Gate.fn must be 'scale' or 'gpas', got {self.fn!r}")
        if self.fn == "gpas" and self.site != "stream":
            raise ValueError("a 'gpas' gate acts on the stream after the add: use site='stream'")
        if not self.sublayers or not set(self.sublayers) <= set(SUBLAYERS):
            raise ValueError(f"Gate.sublayers must be a non-empty subset of {SUBLAYERS}")

    def key(self, sublayer: Sublayer) -> str:
        """This gate's parameter name for `sublayer`: the site, plus the sublayer if not shared."""
        return self.site if self.shared else f"{self.site}_{sublayer}"


@dataclass(frozen=True)
class Hyper:
    """Hyper-connections of one block: n residual streams mixed by learned weights.

    The hidden state is H ∈ R^{n×D} per token (n copies of the embedding before block 0, summed
    after the last). Each sublayer F (attention, MLP) is one hyper-connection "layer" k with
    α = [A_m | A_r] ∈ R^{n×(n+1)} and B ∈ R^n:

        h = A_mᵀ H,   H' = B ⊗ F(h) + A_rᵀ H

    initialized A_m = e_{k mod n}, A_r = I, B = 1 (at n = 1 the plain residual x + F(x)).
    Dynamic hyper-connections add α += s_α·tanh(LN(H) W_α) and B += s_β·tanh(LN(H) W_β), W
    zero-initialized and s_α = s_β = 0.01, so they start as the static ones. F keeps the
    placement's branch-side norms, scales and gates; nothing may act on the residual itself.

    Attributes:
        streams: n ≥ 1.
        dynamic: the input-dependent weights (DHC) on top of the static ones (SHC).
        layer: k of the block's attention sublayer; its MLP is layer k + 1 (a block is two
            hyper-connection layers, so block i starts at k = 2i).

    Paper: "Hyper-Connections" (Zhu, Huang, Zeng, Wu, Cheng, Zhou, ICLR 2025), Algorithm 1.
    """

    streams: int
    dynamic: bool = False
    layer: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.streams, int) or isinstance(self.streams, bool) or self.streams < 1:
            raise ValueError(f"Hyper.streams must be a positive int, got {self.streams!r}")
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
            raise ValueError(f"Hyper.layer must be an int >= 0, got {self.layer!r}")


@dataclass(frozen=True)
class Placement:
    """One block: norm slots per sublayer, constant scales, gates and the head-wise scale.

    The sublayer F ∈ {Attn, MLP} of a block computes, with absent slots and gates omitted,

        y = post( α · x + branch_out( F( s · pre(x) ) ) )

    Attributes:
        attn: norm slots of the attention sublayer, from ("pre", "branch_out", "post").
        mlp: norm slots of the MLP sublayer, from ("pre", "hidden", "branch_out", "post").
        input_scale: s, multiplies the branch input after the "pre" norm (LNS: 1/√ℓ).
        residual_scale: α, multiplies the shortcut x (DeepNorm: (2L)^{1/4}).
        gates: learnable multipliers (`Gate`).
        head_scale: NormFormer's learnable per-head scale γ_h (init 1) on the attention output.
        qkv_norm: the block's norm on each head's query, key and value (over the head size,
            one weight shared by all heads), after the projections and before RoPE
            (HybridNorm).
        hyper: hyper-connections in place of the residual add (`Hyper`); then the sublayers
            may have no "post" slot, no residual scale and no residual or stream gate.
    """

    attn: tuple[Slot, ...] = ()
    mlp: tuple[Slot, ...] = ()
    input_scale: float = 1.0
    residual_scale: float = 1.0
    gates: tuple[Gate, ...] = ()
    head_scale: bool = False
    qkv_norm: bool = False
    hyper: Hyper | None = None

    def __post_init__(self) -> None:
        for sublayer in SUBLAYERS:
            slots = getattr(self, sublayer)
            allowed = SLOTS if sublayer == "mlp" else tuple(s for s in SLOTS if s != "hidden")
            bad = [s for s in slots if s not in allowed]
            if bad or len(set(slots)) != len(slots):
                raise ValueError(
                    f"Placement.{sublayer}: slots must be distinct names from {allowed}, "
                    f"got {slots!r}"
                )
        for name in ("input_scale", "residual_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"Placement.{name} must be a finite positive number, got {value!r}"
                )
        sites = [(g.site, s) for g in self.gates for s in g.sublayers]
        if len(set(sites)) != len(sites):
            raise ValueError(f"Placement.gates: two gates act at the same site: {self.gates!r}")
        if self.hyper is not None and not isinstance(self.hyper, Hyper):
            raise TypeError(f"Placement.hyper must be a Hyper or None, got {self.hyper!r}")
        if self.hyper is not None and (
            "post" in self.attn + self.mlp or self.residual_scale != 1.0
            or any(g.site != "branch" for g in self.gates)
        ):
            raise ValueError(
                "Placement.hyper: hyper-connections replace the residual add, so the block may "
                "have no 'post' slot, no residual_scale and no residual or stream gate"
            )

    def slots(self, sublayer: Sublayer) -> tuple[Slot, ...]:
        """The norm slots of `sublayer`."""
        return getattr(self, sublayer)

    def gate(self, sublayer: Sublayer, site: str) -> Gate | None:
        """The gate acting at `site` of `sublayer`, if any."""
        for g in self.gates:
            if g.site == site and sublayer in g.sublayers:
                return g
        return None


@dataclass(frozen=True)
class InitSpec:
    """What a model's `init_weights` does for a scheme.

    Every Linear weight is drawn from N(0, std) ("normal") or from xavier_normal with gain 1
    ("xavier"); every bias is zero. Then the branch-output-side weights (attention v_proj and
    out_proj, MLP fc1 and fc2) are multiplied by `branch_gain`, which equals
    xavier_normal(gain=branch_gain) for the "xavier" base (DeepNorm's β, T-Fixup's factor).
    The token (or patch) embedding is drawn from N(0, embed_std), D^{-1/2} when `embed_std` is
    None, and multiplied by `embed_gain`. Position embeddings use `embed_std` without the gain.

    Attributes:
        linear: "normal" or "xavier".
        std: the standard deviation of the "normal" base, 0.02 (GPT-2, LLaMA, ViT).
        branch_gain: multiplier of v_proj, out_proj, fc1 and fc2 weights.
        embed_std: std of the embedding tables; None means D^{-1/2} (fairseq, T-Fixup).
        embed_gain: multiplier of the token embedding (or the ViT patch projection).
    """

    linear: Literal["normal", "xavier"] = "normal"
    std: float = 0.02
    branch_gain: float = 1.0
    embed_std: float | None = 0.02
    embed_gain: float = 1.0

    def __post_init__(self) -> None:
        if self.linear not in ("normal", "xavier"):
            raise ValueError(f"InitSpec.linear must be 'normal' or 'xavier', got {self.linear!r}")


@dataclass(frozen=True)
class Layout:
    """A whole stack: a `Placement` per block plus the model-level parts.

    Attributes:
        blocks: one `Placement` per block, block 0 first.
        final_norm: a norm after the last block (absent for Post-LN stacks, whose last block
            already ends with a norm, and for normalization-free schemes).
        embed_norm: a norm on the embeddings before the first block (Peri-LN's option).
        scale_embeddings: multiply the token embeddings by √D in forward (T-Fixup).
        init: the weight initialization (`InitSpec`).
        scheme: the scheme's name, filled in by `resolve_layout`.
    """

    blocks: tuple[Placement, ...]
    final_norm: bool = True
    embed_norm: bool = False
    scale_embeddings: bool = False
    init: InitSpec = field(default_factory=InitSpec)
    scheme: str = ""

    def __post_init__(self) -> None:
        counts = {None if p.hyper is None else p.hyper.streams for p in self.blocks}
        if len(counts) > 1:
            raise ValueError(
                f"Layout: every block must have the same hyper-connection streams, got {counts}"
            )

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def streams(self) -> int | None:
        """The number n of hyper-connection streams, None for a plain residual stack."""
        hyper = self.blocks[0].hyper if self.blocks else None
        return None if hyper is None else hyper.streams


@dataclass(frozen=True)
class Scheme:
    """A named placement scheme: `layout(depth, architecture, **options) -> Layout`."""

    name: str
    formula: str
    paper: str
    layout: Callable[..., Layout]

    def options(self) -> dict[str, Any]:
        """The scheme's options and their defaults."""
        params = inspect.signature(self.layout).parameters
        return {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}


SCHEMES: Registry[Scheme] = Registry("placement scheme", plural="schemes")
LayoutFn = TypeVar("LayoutFn", bound=Callable[..., Layout])


def register_scheme(name: str, *, formula: str, paper: str) -> Callable[[LayoutFn], LayoutFn]:
    """Function decorator: register `layout(depth, architecture, **options) -> Layout` as the
    placement scheme `name` (stored lower-case) in `SCHEMES`.

    `formula` is the scheme in one line, `paper` its citation; keyword-only arguments of the
    function are the scheme's options (`Scheme.options`), given as `placement_kwargs`.
    """

    def decorator(layout: LayoutFn) -> LayoutFn:
        SCHEMES.add(name, Scheme(name.lower(), formula, paper, layout))
        return layout

    return decorator


PRE = Placement(attn=("pre",), mlp=("pre",))
POST = Placement(attn=("post",), mlp=("post",))
PERI = Placement(attn=("pre", "branch_out"), mlp=("pre", "branch_out"))
BARE = Placement()


def deepnorm_constants(depth: int, architecture: Architecture = "decoder") -> tuple[float, float]:
    """DeepNorm's (α, β) for a single stack of `depth` blocks (Wang et al. 2022, Table 1).

    decoder-only: α = (2M)^{1/4}, β = (8M)^{-1/4};  encoder-only: α = (2N)^{1/4}, β = (8N)^{-1/4}.
    (Both rows have the same form; the encoder-decoder rows are not used by normlab's models.)
    """
    _check_architecture(architecture)
    return (2 * depth) ** 0.25, (8 * depth) ** -0.25


def tfixup_constants(depth: int, architecture: Architecture = "decoder") -> tuple[float, float]:
    """T-Fixup's (branch factor, embedding factor) for a single stack of `depth` blocks.

    encoder (the paper's encoder rule): 0.67·N^{-1/4} on v/out/fc1/fc2, (9N)^{-1/4} on the
    embedding. decoder-only (no published constants; the literal adaptation of the decoder rule):
    (9M)^{-1/4} on both.
    """
    _check_architecture(architecture)
    if architecture == "encoder":
        return 0.67 * depth**-0.25, (9 * depth) ** -0.25
    return (9 * depth) ** -0.25, (9 * depth) ** -0.25


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


@register_scheme(
    "post",
    formula="y = N(x + F(x)) per sublayer; no final norm",
    paper="Attention Is All You Need (Vaswani et al., NeurIPS 2017)",
)
def _post(depth: int, architecture: Architecture) -> Layout:
    return Layout((POST,) * depth, final_norm=False)


@register_scheme(
    "pre",
    formula="y = x + F(N(x)) per sublayer; final norm",
    paper="On Layer Normalization in the Transformer Architecture (Xiong et al., ICML 2020)",
)
def _pre(depth: int, architecture: Architecture) -> Layout:
    return Layout((PRE,) * depth)


@register_scheme(
    "peri",
    formula="y = x + N_out(F(N_in(x))); final norm; optional embedding norm",
    paper="Peri-LN: Revisiting Normalization Layer in the Transformer Architecture "
    "(Kim et al., ICML 2025); Sandwich-LN: CogView (Ding et al., NeurIPS 2021)",
)
def _peri(depth: int, architecture: Architecture, *, embed_norm: bool = False) -> Layout:
    return Layout((PERI,) * depth, embed_norm=bool(embed_norm))


@register_scheme(
    "mix",
    formula="blocks i < ⌊α·L⌋ Post-LN, the rest Pre-LN; final norm",
    paper="Mix-LN: Unleashing the Power of Deeper Layers by Combining Pre-LN and Post-LN "
    "(Li, Yin, Liu, ICLR 2025)",
)
def _mix(depth: int, architecture: Architecture, *, alpha: float = 0.25) -> Layout:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"mix: alpha (the Post-LN fraction) must be in [0, 1], got {alpha!r}")
    boundary = mix_boundary(alpha, depth)
    return Layout(tuple(POST if i < boundary else PRE for i in range(depth)))


def mix_boundary(alpha: float, depth: int) -> int:
    """Mix-LN's P = ⌊α·L⌋: blocks 0..P−1 (0-based) are Post-LN, the rest Pre-LN.

    A tolerance of 1e-9 keeps binary rounding from moving the boundary (0.29·100 = 28.999…).
    """
    return math.floor(alpha * depth + 1e-9)


@register_scheme(
    "lns",
    formula="y = x + F(N(x)/√ℓ), ℓ = i + 1; final norm unscaled",
    paper="The Curse of Depth in Large Language Models (Sun et al., NeurIPS 2025)",
)
def _lns(depth: int, architecture: Architecture) -> Layout:
    # ℓ = i + 1 is 1-based: block 0 is unscaled.
    blocks = tuple(
        dataclasses.replace(PRE, input_scale=1.0 / math.sqrt(i + 1)) for i in range(depth)
    )
    return Layout(blocks)


@register_scheme(
    "deepnorm",
    formula="y = N(α·x + F(x)), α = (2L)^{1/4}, init gain β = (8L)^{-1/4}",
    paper="DeepNet: Scaling Transformers to 1,000 Layers (Wang et al., 2022; TPAMI 2024)",
)
def _deepnorm(depth: int, architecture: Architecture) -> Layout:
    alpha, beta = deepnorm_constants(depth, architecture)
    block = dataclasses.replace(POST, residual_scale=alpha)
    return Layout(
        (block,) * depth, final_norm=False, init=InitSpec(linear="xavier", branch_gain=beta)
    )


@register_scheme(
    "normformer",
    formula="y = x + N_a(γ_h ⊙ Attn(N(x))); y = x + fc2(N_f(gelu(fc1(N(x))))); final norm",
    paper="NormFormer: Improved Transformer Pretraining with Extra Normalization "
    "(Shleifer, Weston, Ott, 2021)",
)
def _normformer(
    depth: int, architecture: Architecture, *, scale_heads: bool = True, scale_attn: bool = True,
    scale_fc: bool = True, scale_resids: bool = False,
) -> Layout:
    block = Placement(
        attn=("pre", "branch_out") if scale_attn else ("pre",),
        mlp=("pre", "hidden") if scale_fc else ("pre",),
        head_scale=bool(scale_heads),
        gates=(Gate("residual", init=1.0, per_channel=True, sublayers=("mlp",)),)
        if scale_resids else (),
    )
    return Layout((block,) * depth)


GPAS_GATE = Gate("stream", fn="gpas", init=0.0, shared=True)


@register_scheme(
    "gpas",
    formula="y = G(x + F(N(x))), G(y) = y − SiLU(a)·sg(y), one gate a per block",
    paper="GPAS: Accelerating Convergence of LLM Pretraining via Gradient-Preserving "
    "Activation Scaling (Chen et al., NeurIPS 2025)",
)
def _gpas(depth: int, architecture: Architecture, *, base: str = "pre") -> Layout:
    if base not in ("pre", "peri"):
        raise ValueError(
            f"gpas: base must be 'pre' or 'peri' (GPAS after each residual add), got {base!r}"
        )
    inner = SCHEMES[base].layout(depth, architecture)
    blocks = tuple(dataclasses.replace(p, gates=(*p.gates, GPAS_GATE)) for p in inner.blocks)
    return dataclasses.replace(inner, blocks=blocks)


@register_scheme(
    "rezero",
    formula="y = x + α·F(x), one α per block (init 0); no norms",
    paper="ReZero is All You Need: Fast Convergence at Large Depth "
    "(Bachlechner et al., UAI 2021)",
)
def _rezero(depth: int, architecture: Architecture) -> Layout:
    block = Placement(gates=(Gate("branch", init=0.0, shared=True),))
    return Layout((block,) * depth, final_norm=False)


@register_scheme(
    "skipinit",
    formula="y = x + g·F(x), one g per branch (init 0); no norms",
    paper="Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep "
    "Networks (De, Smith, NeurIPS 2020)",
)
def _skipinit(depth: int, architecture: Architecture) -> Layout:
    block = Placement(gates=(Gate("branch", init=0.0, shared=False),))
    return Layout((block,) * depth, final_norm=False)


@register_scheme(
    "tfixup",
    formula="y = x + F(x); no norms; scaled Xavier init, √D embedding scale",
    paper="Improving Transformer Optimization Through Better Initialization "
    "(Huang, Perez, Ba, Volkovs, ICML 2020)",
)
def _tfixup(depth: int, architecture: Architecture) -> Layout:
    branch, embed = tfixup_constants(depth, architecture)
    init = InitSpec(linear="xavier", branch_gain=branch, embed_std=None, embed_gain=embed)
    return Layout((BARE,) * depth, final_norm=False, scale_embeddings=True, init=init)


@register_scheme(
    "none",
    formula="y = x + F(x); no norms (control)",
    paper="(no normalization)",
)
def _none(depth: int, architecture: Architecture) -> Layout:
    return Layout((BARE,) * depth, final_norm=False)


@register_scheme(
    "olmo2",
    formula="y = x + N(F(x)) per sublayer (no norm on the branch input); final norm",
    paper="2 OLMo 2 Furious (OLMo et al., 2024)",
)
def _olmo2(depth: int, architecture: Architecture) -> Layout:
    block = Placement(attn=("branch_out",), mlp=("branch_out",))
    return Layout((block,) * depth)


@register_scheme(
    "hybridnorm",
    formula="y = N(x + Attn(x)) with per-head N on q, k, v; out = y + FFN(y); final norm",
    paper="HybridNorm: Towards Stable and Efficient Transformer Training via Hybrid "
    "Normalization (Zhuo et al., 2025)",
)
def _hybridnorm(depth: int, architecture: Architecture, *, first_block_pre: bool = False
                ) -> Layout:
    # The official code's FFN norm also feeds the residual ("ffn_residual_after_norm"): the
    # stream is N(y) + FFN(N(y)), which is the attention's "post" slot followed by a norm-free
    # MLP sublayer. HybridNorm* (first_block_pre) makes block 0 Pre-Norm on both sublayers,
    # keeping its QKV-norm.
    block = Placement(attn=("post",), qkv_norm=True)
    first = dataclasses.replace(PRE, qkv_norm=True) if first_block_pre else block
    return Layout((first,) + (block,) * (depth - 1))


@register_scheme(
    "hc",
    formula="H' = B·F(A_mᵀH) + A_rᵀH over n streams (F: the base scheme's branch); "
    "H⁰ = n copies of the embedding, Σ streams before the final norm",
    paper="Hyper-Connections (Zhu et al., ICLR 2025)",
)
def _hc(depth: int, architecture: Architecture, *, streams: int = 4, dynamic: bool = True,
        base: str = "pre") -> Layout:
    if not isinstance(base, str) or base.lower() == "hc":
        raise ValueError(f"hc: base must be the name of another scheme, got {base!r}")
    inner = SCHEMES.lookup(base).layout(depth, architecture)
    try:
        blocks = tuple(
            dataclasses.replace(p, hyper=Hyper(streams, bool(dynamic), layer=2 * i))
            for i, p in enumerate(inner.blocks)
        )
    except ValueError as error:
        raise ValueError(f"hc on base {base!r}: {error}") from None
    return dataclasses.replace(inner, blocks=blocks)


def resolve_layout(
    scheme: str, depth: int, *, architecture: Architecture = "decoder", **options: Any
) -> Layout:
    """The `Layout` of a `depth`-block stack under `scheme`.

    Args:
        scheme: a name in `SCHEMES` (case-insensitive).
        depth: the number of blocks L.
        architecture: "decoder" (causal LM) or "encoder" (ViT); picks the DeepNorm and T-Fixup
            constants.
        options: the scheme's options (`SCHEMES[name].options()`), e.g. mix's `alpha`.
    """
    spec = SCHEMES.lookup(scheme)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    _check_architecture(architecture)
    known = spec.options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        accepted = ", ".join(known) or "none"
        raise ValueError(
            f"placement {spec.name!r}: unknown option(s) {', '.join(unknown)}; accepted: {accepted}"
        )
    return dataclasses.replace(spec.layout(depth, architecture, **options), scheme=spec.name)


def resolve_placement(
    scheme: str, layer_index: int, depth: int, *, architecture: Architecture = "decoder",
    **options: Any,
) -> Placement:
    """The `Placement` of block `layer_index` (0-based) of a `depth`-block stack."""
    layout = resolve_layout(scheme, depth, architecture=architecture, **options)
    if not isinstance(layer_index, int) or not 0 <= layer_index < depth:
        raise ValueError(f"layer_index must be an int in [0, {depth}), got {layer_index!r}")
    return layout.blocks[layer_index]
