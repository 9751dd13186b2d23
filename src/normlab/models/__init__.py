"""Reference models built from `normlab.blocks`: a GPT (causal LM) and a ViT (classifier).

    from normlab.models import GPT, GPTConfig
    model = GPT(GPTConfig(norm="rmsnorm", placement="peri"))
"""

from normlab.models.gpt import GPT, GPTConfig
from normlab.models.vit import ViT, ViTConfig

__all__ = ["GPT", "GPTConfig", "ViT", "ViTConfig"]
