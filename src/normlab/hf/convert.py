"""Lossless conversion between normlab's GPT / Llama and `transformers`' native classes.

    hf = to_hf(model)                 # a native transformers model (Llama, Qwen3, OLMo-2, GPT-2)
    export(model, "out/")             # a save_pretrained folder (safetensors, no pickle)
    model = from_hf("out/")           # or from_hf(hf_model): normlab's model, same logits

Which family a model maps to (`families.FAMILIES`): a Llama with Pre-LN RMSNorm → Llama, with
QK RMSNorm per head → Qwen3, with placement olmo2 and QK RMSNorm across heads → OLMo-2; a GPT
with Pre-LN LayerNorm → GPT-2. Everything else is refused with a one-line ValueError naming
what has no native equivalent, before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from normlab.hf.families import FAMILIES, Family, check_layout, check_norms
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig

NATIVE_PAIRS = ("placement pre with qk_norm None (Llama) or 'per_head' (Qwen3), "
                "placement olmo2 with qk_norm 'across_heads' (OLMo-2)")
_QK_FAMILY = {None: "llama", "per_head": "qwen3", "across_heads": "olmo2"}


def family_of(model: nn.Module) -> Family:
    """The native family of a normlab GPT or Llama (its structure is checked by `to_hf`)."""
    if isinstance(model, Llama):
        return FAMILIES[_QK_FAMILY[model.config.qk_norm]]
    if isinstance(model, GPT):
        return FAMILIES["gpt2"]
    raise TypeError(f"to_hf converts a normlab GPT or Llama, got {type(model).__name__}")


def to_hf(model: GPT | Llama) -> PreTrainedModel:
    """The native `transformers` model computing the same logits, in eval mode.

    Same parameter dtype and device as `model`; ValueError (one line, naming what has no
    native equivalent) when no native class expresses the model exactly.
    """
    family = family_of(model)
    eps = check_norms(model, family)
    try:
        check_layout(model, family)
    except ValueError as error:
        if not isinstance(model, Llama):
            raise
        raise ValueError(f"{error} (qk_norm={model.config.qk_norm!r}); native pairs: "
                         f"{NATIVE_PAIRS}") from None
    config = family.to_hf_config(model, eps)
    state = family.to_hf_state(model)
    weight = next(model.parameters())
    hf = family.hf_class(config).to(device=weight.device, dtype=weight.dtype)
    hf.load_state_dict(state, strict=True)
    return hf.eval()


def export(model: GPT | Llama, out_dir: str | os.PathLike) -> Path:
    """Write `to_hf(model)` with `save_pretrained` (safetensors) to `out_dir`; return it.

    A model without a native equivalent raises before anything is written.
    """
    hf = to_hf(model)
    out = Path(out_dir)
    hf.save_pretrained(out)
    return out


def _family(config: PretrainedConfig) -> Family:
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"from_hf: model_type {model_type!r} is not supported; supported: "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def config_from_hf(folder: str | os.PathLike) -> GPTConfig | LlamaConfig:
    """The normlab model config of a `save_pretrained` folder, read without loading weights.

    Refuses, like `from_hf`, a `model_type` or a config feature normlab cannot express.
    """
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"{folder} is not a save_pretrained folder: it has no config.json")
    config = AutoConfig.from_pretrained(folder)
    return _family(config).from_hf_config(config)


def from_hf(model_or_dir: PreTrainedModel | str | os.PathLike) -> GPT | Llama:
    """normlab's GPT or Llama with the weights and config of a native model or folder.

    `model_or_dir` is a `transformers` model or a `save_pretrained` folder of a supported
    `model_type` (llama, qwen3, olmo2, gpt2); config features normlab cannot express raise a
    ValueError naming them. The result is in eval mode, in the source's dtype.
    """
    if isinstance(model_or_dir, str | os.PathLike):
        config_from_hf(model_or_dir)  # refuse before loading any weight
        hf = AutoModelForCausalLM.from_pretrained(model_or_dir)
    elif isinstance(model_or_dir, PreTrainedModel):
        hf = model_or_dir
    else:
        raise TypeError(f"from_hf takes a transformers model or a folder, got "
                        f"{type(model_or_dir).__name__}")
    family = _family(hf.config)
    config = family.from_hf_config(hf.config)
    model = (Llama if family.model_type != "gpt2" else GPT)(config)
    weight = next(hf.parameters())
    model.to(device=weight.device, dtype=weight.dtype)
    model.load_state_dict(family.from_hf_state(hf.state_dict(), config), strict=True)
    return model.eval()
