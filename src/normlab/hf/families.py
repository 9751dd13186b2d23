"""The four native `transformers` families normlab's models map onto exactly.

A `Family` knows, for one HuggingFace `model_type`, how to check a normlab model against it,
its config in both directions and the tensor names in both directions:

    llama   Pre-LN RMSNorm Llama                           LlamaForCausalLM
    qwen3   the same with QK RMSNorm per head              Qwen3ForCausalLM
    olmo2   placement olmo2, QK RMSNorm across heads       Olmo2ForCausalLM
    gpt2    Pre-LN LayerNorm GPT (exact GELU)              GPT2LMHeadModel

Checks raise a one-line ValueError naming what has no native equivalent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    PretrainedConfig,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers import (
    LlamaConfig as HFLlamaConfig,
)

from normlab.blocks import SCHEMES, Placement
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig
from normlab.norms import Norm, get_norm_class

PRE = Placement(attn=("pre",), mlp=("pre",))
REORDERED = Placement(attn=("branch_out",), mlp=("branch_out",))

# (normlab module, HF module) within a block of the Llama-like families
_DECODER_LINEARS = [
    ("attn.q_proj", "self_attn.q_proj"), ("attn.k_proj", "self_attn.k_proj"),
    ("attn.v_proj", "self_attn.v_proj"), ("attn.out_proj", "self_attn.o_proj"),
    ("mlp.gate", "mlp.gate_proj"), ("mlp.fc1", "mlp.up_proj"), ("mlp.fc2", "mlp.down_proj"),
]
_DECODER_NORMS = {
    "llama": [("norms.attn_pre", "input_layernorm"), ("norms.mlp_pre", "post_attention_layernorm")],
    "olmo2": [("norms.attn_branch_out", "post_attention_layernorm"),
              ("norms.mlp_branch_out", "post_feedforward_layernorm")],
}
_DECODER_NORMS["qwen3"] = _DECODER_NORMS["llama"]
_QK_NORMS = [("attn.q_norm", "self_attn.q_norm"), ("attn.k_norm", "self_attn.k_norm")]


@dataclass(frozen=True)
class Family:
    """One native family: its HF classes and the conversions of config and tensors."""

    model_type: str
    hf_class: type[nn.Module]
    hf_config_class: type[PretrainedConfig]
    norm: str                                # the one normlab norm it takes
    placement: Placement                     # every block's placement
    qk_norm: str | None
    to_hf_config: Callable[[Any, float], PretrainedConfig]
    from_hf_config: Callable[[PretrainedConfig], Any]
    to_hf_state: Callable[[nn.Module], dict[str, Tensor]]
    from_hf_state: Callable[[dict[str, Tensor], Any], dict[str, Tensor]]


# ---- the checks shared by every family -------------------------------------------------------


def check_norms(model: nn.Module, family: Family) -> float:
    """The eps every norm of `model` shares; ValueError unless each norm is the family's."""
    cls = get_norm_class(family.norm)
    epsilons = set()
    for name, module in model.named_modules():
        if not isinstance(module, Norm):
            continue
        if type(module) is not cls:
            raise ValueError(
                f"norm {module.name!r} at {name} has no native equivalent in "
                f"{family.hf_class.__name__} (it uses {family.norm} only)"
            )
        if family.norm == "rmsnorm" and module.eps_outside:
            raise ValueError(f"{name}: RMSNorm with eps outside the root has no native equivalent")
        if family.norm == "rmsnorm" and module.bias is not None:
            raise ValueError(f"{name}: RMSNorm's bias β has no native equivalent")
        epsilons.add(module.eps)
    if len(epsilons) != 1:
        raise ValueError(f"the norms use several eps {sorted(epsilons)}; "
                         f"{family.hf_class.__name__} has one")
    return epsilons.pop()


def check_layout(model: GPT | Llama, family: Family) -> None:
    """ValueError unless every block is the family's placement, with a final norm only."""
    layout = model.layout
    fits = all(p == family.placement for p in layout.blocks) and layout.final_norm
    if not fits or layout.embed_norm or layout.scale_embeddings:
        scheme = SCHEMES[layout.scheme]
        raise ValueError(
            f"placement {scheme.name!r} ({scheme.formula}) has no native equivalent in "
            f"{family.hf_class.__name__}"
        )


def refuse_unsupported(name: str, checks: dict[str, tuple[Any, bool]], why: str) -> None:
    """ValueError naming every config field whose (value, unsupported) pair is unsupported."""
    bad = [f"{key}={value!r}" for key, (value, unsupported) in checks.items() if unsupported]
    if bad:
        raise ValueError(f"{name}: {', '.join(bad)} has no normlab equivalent ({why})")


def norm_weight(module: Norm) -> Tensor:
    """γ (1 + w for a zero-centred weight), ones for a norm without one (affine=False)."""
    if module.weight is not None:
        return module.weight.detach() + module.weight_offset
    return torch.ones(module.dim)


def norm_bias(module: Norm) -> Tensor:
    """β, zeros for a norm without one."""
    if module.bias is not None:
        return module.bias.detach()
    return torch.zeros(module.dim)


def _linear_bias(linear: nn.Linear) -> Tensor:
    if linear.bias is not None:
        return linear.bias.detach()
    return torch.zeros(linear.out_features)


# ---- Llama, Qwen3, OLMo-2 --------------------------------------------------------------------


def _decoder_pairs(family: str, depth: int, qk_norm: bool) -> Iterator[tuple[str, str]]:
    """(normlab, HF) parameter names of a Llama-like family, the LM head aside."""
    yield "wte.weight", "model.embed_tokens.weight"
    for i in range(depth):
        local = _DECODER_LINEARS + _DECODER_NORMS[family] + (_QK_NORMS if qk_norm else [])
        for ours, theirs in local:
            yield f"blocks.{i}.{ours}.weight", f"model.layers.{i}.{theirs}.weight"
    yield "final_norm.weight", "model.norm.weight"


def _decoder_to_hf_config(family: str) -> Callable[[Llama, float], PretrainedConfig]:
    def convert(model: Llama, eps: float) -> PretrainedConfig:
        c = model.config
        if c.embed_multiplier != 1.0:
            raise ValueError(f"an embedding scale of {c.embed_multiplier:g} has no native "
                             f"equivalent in {FAMILIES[family].hf_class.__name__}")
        if model.embed_gain is not None:
            raise ValueError("the learnable embedding gain (embed_gain_init) has no native "
                             f"equivalent in {FAMILIES[family].hf_class.__name__}")
        fields = dict(
            vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.mlp_hidden,
            num_hidden_layers=c.depth, num_attention_heads=c.heads,
            num_key_value_heads=c.kv_heads or c.heads, head_dim=c.dim // c.heads,
            hidden_act="silu", max_position_embeddings=c.block_size,
            initializer_range=c.init_std, rms_norm_eps=eps,
            tie_word_embeddings=c.tie_embeddings, attention_bias=False, attention_dropout=0.0,
            rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
            pad_token_id=None, bos_token_id=None, eos_token_id=None,
        )
        if family == "llama":
            fields["mlp_bias"] = False
        return FAMILIES[family].hf_config_class(**fields)

    return convert


def _decoder_from_hf_config(family: str) -> Callable[[PretrainedConfig], LlamaConfig]:
    def convert(hf: PretrainedConfig) -> LlamaConfig:
        name = type(hf).__name__
        rope = dict(getattr(hf, "rope_parameters", None) or {})
        head_dim = getattr(hf, "head_dim", None)
        refuse_unsupported(name, {
            "hidden_act": (hf.hidden_act, hf.hidden_act != "silu"),
            "attention_bias": (getattr(hf, "attention_bias", False),
                               bool(getattr(hf, "attention_bias", False))),
            "mlp_bias": (getattr(hf, "mlp_bias", False), bool(getattr(hf, "mlp_bias", False))),
            "rope_type": (rope.get("rope_type"), rope.get("rope_type", "default") != "default"),
            "head_dim": (head_dim,
                         head_dim not in (None, hf.hidden_size // hf.num_attention_heads)),
            "sliding_window": (getattr(hf, "sliding_window", None),
                               getattr(hf, "sliding_window", None) is not None),
        }, "the Llama has SiLU, no biases, default RoPE, head size hidden_size/heads and full "
           "attention")
        kv = hf.num_key_value_heads
        return LlamaConfig(
            vocab_size=hf.vocab_size, block_size=hf.max_position_embeddings,
            depth=hf.num_hidden_layers, dim=hf.hidden_size, heads=hf.num_attention_heads,
            kv_heads=None if kv in (None, hf.num_attention_heads) else kv,
            mlp_ratio=hf.intermediate_size / hf.hidden_size, mlp_multiple_of=1,
            norm="rmsnorm", norm_kwargs={"eps": hf.rms_norm_eps},
            placement="olmo2" if family == "olmo2" else "pre",
            qk_norm=FAMILIES[family].qk_norm, rope_theta=float(rope.get("rope_theta", 1e4)),
            tie_embeddings=bool(hf.tie_word_embeddings), init_std=hf.initializer_range,
        )

    return convert


def _decoder_to_hf_state(family: str) -> Callable[[Llama], dict[str, Tensor]]:
    def convert(model: Llama) -> dict[str, Tensor]:
        modules = dict(model.named_modules())
        state = {}
        for ours, theirs in _decoder_pairs(family, model.config.depth, family != "llama"):
            module = modules[ours.removesuffix(".weight")]
            state[theirs] = norm_weight(module) if isinstance(module, Norm) else module.weight
        state["lm_head.weight"] = model.lm_head.weight
        return {k: v.detach() for k, v in state.items()}

    return convert


def _decoder_from_hf_state(family: str) -> Callable[[dict[str, Tensor], LlamaConfig], dict]:
    def convert(hf: dict[str, Tensor], config: LlamaConfig) -> dict[str, Tensor]:
        state = {ours: hf[theirs]
                 for ours, theirs in _decoder_pairs(family, config.depth, family != "llama")}
        state["lm_head.weight"] = hf["lm_head.weight"]
        return state

    return convert


# ---- GPT-2 -----------------------------------------------------------------------------------


def _gpt2_to_hf_config(model: GPT, eps: float) -> GPT2Config:
    c = model.config
    if c.qk_norm is not None:
        raise ValueError(f"QK-norm ({c.qk_norm}) has no native equivalent in GPT2LMHeadModel")
    if model.embed_gain is not None:
        raise ValueError("the learnable embedding gain (embed_gain_init) has no native "
                         "equivalent in GPT2LMHeadModel")
    hidden = model.blocks[0].mlp.fc1.out_features
    return GPT2Config(  # dropout is a training setting: not carried
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.dim, n_layer=c.depth,
        n_head=c.heads, n_inner=hidden, activation_function="gelu", layer_norm_epsilon=eps,
        initializer_range=0.02, tie_word_embeddings=c.tie_embeddings,
        bos_token_id=None, eos_token_id=None,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
    )


def _gpt2_from_hf_config(hf: GPT2Config) -> GPTConfig:
    refuse_unsupported("GPT2Config", {
        key: (getattr(hf, key), getattr(hf, key) != fine)
        for key, fine in (("activation_function", "gelu"), ("scale_attn_weights", True),
                          ("scale_attn_by_inverse_layer_idx", False),
                          ("reorder_and_upcast_attn", False), ("add_cross_attention", False))
    }, "the GPT has exact GELU and 1/√d attention")
    hidden = hf.n_inner or 4 * hf.n_embd
    return GPTConfig(
        vocab_size=hf.vocab_size, block_size=hf.n_positions, depth=hf.n_layer, dim=hf.n_embd,
        heads=hf.n_head, mlp_ratio=hidden / hf.n_embd, norm="layernorm",
        norm_kwargs={"eps": hf.layer_norm_epsilon}, placement="pre", bias=True,
        tie_embeddings=bool(hf.tie_word_embeddings),
    )


def _gpt2_to_hf_state(model: GPT) -> dict[str, Tensor]:
    state = {"transformer.wte.weight": model.wte.weight, "transformer.wpe.weight": model.wpe.weight}
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}"
        attn, mlp, norms = block.attn, block.mlp, block.norms
        for ours, theirs in (("attn_pre", "ln_1"), ("mlp_pre", "ln_2")):
            state[f"{h}.{theirs}.weight"] = norm_weight(norms[ours])
            state[f"{h}.{theirs}.bias"] = norm_bias(norms[ours])
        # Conv1D stores (in, out): the transpose of nn.Linear's (out, in)
        state[f"{h}.attn.c_attn.weight"] = torch.cat([p.weight for p in attn.projections]).T
        state[f"{h}.attn.c_attn.bias"] = torch.cat([_linear_bias(p) for p in attn.projections])
        for ours, theirs in ((attn.out_proj, "attn.c_proj"), (mlp.fc1, "mlp.c_fc"),
                             (mlp.fc2, "mlp.c_proj")):
            state[f"{h}.{theirs}.weight"] = ours.weight.T
            state[f"{h}.{theirs}.bias"] = _linear_bias(ours)
    state["transformer.ln_f.weight"] = norm_weight(model.final_norm)
    state["transformer.ln_f.bias"] = norm_bias(model.final_norm)
    state["lm_head.weight"] = model.lm_head.weight
    return {k: v.detach().contiguous() for k, v in state.items()}


def _gpt2_from_hf_state(hf: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    state = {"wte.weight": hf["transformer.wte.weight"], "wpe.weight": hf["transformer.wpe.weight"]}
    for i in range(config.depth):
        h, b = f"transformer.h.{i}", f"blocks.{i}"
        for ours, theirs in (("attn_pre", "ln_1"), ("mlp_pre", "ln_2")):
            for kind in ("weight", "bias"):
                state[f"{b}.norms.{ours}.{kind}"] = hf[f"{h}.{theirs}.{kind}"]
        qkv_w = hf[f"{h}.attn.c_attn.weight"].T.chunk(3)
        qkv_b = hf[f"{h}.attn.c_attn.bias"].chunk(3)
        for name, w, bias in zip(("q_proj", "k_proj", "v_proj"), qkv_w, qkv_b, strict=True):
            state[f"{b}.attn.{name}.weight"], state[f"{b}.attn.{name}.bias"] = w, bias
        for ours, theirs in (("attn.out_proj", "attn.c_proj"), ("mlp.fc1", "mlp.c_fc"),
                             ("mlp.fc2", "mlp.c_proj")):
            state[f"{b}.{ours}.weight"] = hf[f"{h}.{theirs}.weight"].T
            state[f"{b}.{ours}.bias"] = hf[f"{h}.{theirs}.bias"]
    state["final_norm.weight"] = hf["transformer.ln_f.weight"]
    state["final_norm.bias"] = hf["transformer.ln_f.bias"]
    state["lm_head.weight"] = hf["lm_head.weight"]
    return {k: v.contiguous() for k, v in state.items()}


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        *(
            Family(name, cls, cfg, "rmsnorm", placement, qk,
                   _decoder_to_hf_config(name), _decoder_from_hf_config(name),
                   _decoder_to_hf_state(name), _decoder_from_hf_state(name))
            for name, cls, cfg, placement, qk in (
                ("llama", LlamaForCausalLM, HFLlamaConfig, PRE, None),
                ("qwen3", Qwen3ForCausalLM, Qwen3Config, PRE, "per_head"),
                ("olmo2", Olmo2ForCausalLM, Olmo2Config, REORDERED, "across_heads"),
            )
        ),
        Family("gpt2", GPT2LMHeadModel, GPT2Config, "layernorm", PRE, None,
               _gpt2_to_hf_config, _gpt2_from_hf_config, _gpt2_to_hf_state, _gpt2_from_hf_state),
    )
}
