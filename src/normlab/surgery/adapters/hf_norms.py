"""HuggingFace's own RMSNorm classes, read into normlab's terms.

These classes are not `torch.nn` layers, so surgery learns their parameters from this table,
keyed by class name: the attribute holding eps and the offset added to the stored weight
(Gemma stores w and multiplies by 1 + w).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HFNorm:
    kind: str        # the normlab norm computing the same function
    eps_attr: str    # attribute holding eps
    offset: float    # γ = offset + stored weight


HF_NORMS: dict[str, HFNorm] = {
    "LlamaRMSNorm": HFNorm("rmsnorm", "variance_epsilon", 0.0),
    "MistralRMSNorm": HFNorm("rmsnorm", "variance_epsilon", 0.0),
    "Qwen2RMSNorm": HFNorm("rmsnorm", "variance_epsilon", 0.0),
    "T5LayerNorm": HFNorm("rmsnorm", "variance_epsilon", 0.0),
    "GemmaRMSNorm": HFNorm("rmsnorm", "eps", 1.0),
}
