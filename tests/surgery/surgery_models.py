"""Tiny HuggingFace models with random weights for the surgery tests (no download).

Norm affines, biases and the position table are perturbed away from their init, so a γ, β or a
non-zero stream mean that the surgery forgot would show in the outputs.
"""

from __future__ import annotations

import copy

import torch
import transformers
from torch import nn

transformers.logging.set_verbosity_error()


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if name.endswith("bias") or "norm" in name.lower() or "ln_" in name:
            p.add_(0.3 * noise)
        if "wpe" in name or "position" in name or "cls_token" in name:
            p.add_(0.5 + 0.1 * noise)  # a clearly non-zero mean over channels
    return model.eval()


def gpt2(tied: bool = True, head: bool = True, **kw) -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=61, n_positions=24, n_embd=32, n_layer=2, n_head=2,
        tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0, **kw,
    )
    torch.manual_seed(0)
    cls = transformers.GPT2LMHeadModel if head else transformers.GPT2Model
    return perturb(cls(config))


def llama(tied: bool = False) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    return perturb(transformers.LlamaForCausalLM(config))


def bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return perturb(transformers.BertModel(config))


def vit(head: bool = True) -> nn.Module:
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=16, patch_size=8, num_labels=5,
    )
    torch.manual_seed(0)
    cls = transformers.ViTForImageClassification if head else transformers.ViTModel
    return perturb(cls(config))


def outputs(model: nn.Module, **inputs) -> torch.Tensor:
    """logits (or last_hidden_state) in eval mode, no grad."""
    with torch.no_grad():
        out = model.eval()(**inputs)
    return out["logits"] if "logits" in out else out["last_hidden_state"]


def token_ids(vocab: int = 61, batch: int = 3, seq: int = 11, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def source_and_copy(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(model, an untouched deep copy to compare against)."""
    return model, copy.deepcopy(model)
