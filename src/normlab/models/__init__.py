"""Reference models built from `normlab.blocks`: a GPT and a Llama (causal LMs), a ViT; and
nGPT, the normalized Transformer (its own blocks, no norm layers).

    from normlab.models import GPT, GPTConfig
    model = GPT(GPTConfig(norm="rmsnorm", placement="peri"))
"""

from normlab.models.gpt import GPT, GPTConfig
from normlab.models.llama import Llama, LlamaConfig
from normlab.models.ngpt import NGPT, NGPTConfig
from normlab.models.vit import ViT, ViTConfig

__all__ = ["GPT", "NGPT", "GPTConfig", "Llama", "LlamaConfig", "NGPTConfig", "ViT", "ViTConfig"]
