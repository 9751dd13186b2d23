"""Reference models built from `normlab.blocks`: a GPT and a Llama (causal LMs), a ViT.

    from normlab.models import GPT, GPTConfig
    model = GPT(GPTConfig(norm="rmsnorm", placement="peri"))
"""

from normlab.models.gpt import GPT, GPTConfig
from normlab.models.llama import Llama, LlamaConfig
from normlab.models.vit import ViT, ViTConfig

__all__ = ["GPT", "GPTConfig", "Llama", "LlamaConfig", "ViT", "ViTConfig"]
