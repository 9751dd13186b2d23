"""Tiny models with random weights for the quantization tests (no download).

Norm affines and biases are moved away from their init, with a few planted large-γ channels,
so a migrated scale the surgery forgot, or an outlier the report misses, shows.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.models import GPT, GPTConfig, Llama, LlamaConfig, ViT, ViTConfig
from normlab.selection import is_norm

OUTLIER_CHANNELS = (3, 17)


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Norm parameters and biases += 0.3·noise; γ of channels 3 and 17 of every norm × 20."""
    gen = torch.Generator().manual_seed(seed)
    for _name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p is None:
                continue
            noise = torch.randn(p.shape, generator=gen)
            if pname == "bias" or is_norm(module):
                p.add_(0.3 * noise)
            if is_norm(module) and pname == "weight" and p.dim() == 1 and p.numel() > 17:
                p[list(OUTLIER_CHANNELS)] *= 20
    return model.eval()


def hf(arch: str) -> nn.Module:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    if arch == "gpt2":
        config = transformers.GPT2Config(vocab_size=61, n_positions=24, n_embd=32, n_layer=2,
                                         n_head=2, bos_token_id=0, eos_token_id=0)
        return perturb(transformers.GPT2LMHeadModel(config))
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
        return perturb(transformers.LlamaForCausalLM(config))
    if arch == "bert":
        config = transformers.BertConfig(
            vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=32)
        return perturb(transformers.BertModel(config))
    if arch == "vit":
        config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64,
                                        image_size=16, patch_size=8, num_labels=5)
        return perturb(transformers.ViTForImageClassification(config))
    raise ValueError(arch)


def normlab(kind: str, norm: str = "layernorm", placement: str = "pre") -> nn.Module:
    torch.manual_seed(0)
    if kind == "gpt":
        model = GPT(GPTConfig(vocab_size=37, block_size=16, depth=2, dim=32, heads=2, norm=norm,
                              placement=placement))
    elif kind == "llama":
        model = Llama(LlamaConfig(vocab_size=37, block_size=16, depth=2, dim=32, heads=2,
                                  kv_heads=1, norm=norm, placement=placement))
    else:
        model = ViT(ViTConfig(image_size=8, patch_size=4, channels=3, num_classes=4, depth=2,
                              dim=32, heads=2, norm=norm, placement=placement))
    return perturb(model)


def inputs(model: nn.Module, batch: int = 3, seed: int = 7) -> dict[str, torch.Tensor]:
    """Keyword inputs of the model's forward: token ids or images."""
    gen = torch.Generator().manual_seed(seed)
    name = type(model).__name__
    if name in ("GPT", "Llama"):
        return {"idx": torch.randint(0, 37, (batch, 12), generator=gen)}
    if name == "ViT":
        return {"images": torch.randn(batch, 3, 8, 8, generator=gen)}
    if "ViT" in name:
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=gen)}
    return {"input_ids": torch.randint(0, 61, (batch, 11), generator=gen)}


def output(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits (normlab, HF heads) or the last hidden state, in eval mode, no grad."""
    with torch.no_grad():
        out = model.eval()(**batch)
    if isinstance(out, tuple):
        return out[0]
    return out["logits"] if "logits" in out else out["last_hidden_state"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
