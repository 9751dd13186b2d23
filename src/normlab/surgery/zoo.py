"""Small-config HuggingFace models of the architectures surgery is verified on (no download).

`build(name)` makes one with random weights: width 32, 2 layers, 4 heads (2 KV heads where
the family has GQA), vocabulary 61. Norm affines and biases are moved off their init and the
position tables get a clear non-zero mean, so a γ, β or stream mean that surgery forgot shows
in the outputs. The tests, the table in docs/surgery.md (`normlab.surgery.table`) and nothing
else use them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_DECODER = dict(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
_SMALL_HEADS = dict(_DECODER, head_dim=8)
_ENCODER = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=40)

# name -> (config class, model class, config keywords)
ZOO: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _DECODER),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _DECODER),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", _SMALL_HEADS),
    "mistral": ("MistralConfig", "MistralForCausalLM", _SMALL_HEADS),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                dict(_SMALL_HEADS, num_local_experts=4, num_experts_per_tok=2)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", _SMALL_HEADS),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(_SMALL_HEADS, query_pre_attn_scalar=8)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(_SMALL_HEADS, query_pre_attn_scalar=8, sliding_window=8)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(_DECODER, pad_token_id=0)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(_DECODER, pad_token_id=0)),
    "opt": ("OPTConfig", "OPTForCausalLM",
            dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                 num_attention_heads=4, max_position_embeddings=32, word_embed_proj_dim=32,
                 pad_token_id=1)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                 dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=32)),
    "falcon": ("FalconConfig", "FalconForCausalLM",
               dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)),
    "bloom": ("BloomConfig", "BloomForCausalLM",
              dict(vocab_size=61, hidden_size=32, n_layer=2, n_head=4)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=61, n_positions=24, n_embd=32, n_layer=2, n_head=4)),
    "bert": ("BertConfig", "BertModel", _ENCODER),
    "roberta": ("RobertaConfig", "RobertaModel", dict(_ENCODER, pad_token_id=1)),
    "t5": ("T5Config", "T5ForConditionalGeneration",
           dict(vocab_size=61, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                decoder_start_token_id=0)),
    "vit": ("ViTConfig", "ViTForImageClassification",
            dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, image_size=16, patch_size=8, num_labels=5)),
    "llama-seqcls": ("LlamaConfig", "LlamaForSequenceClassification",
                     dict(_DECODER, num_labels=3, pad_token_id=0)),
    "bert-seqcls": ("BertConfig", "BertForSequenceClassification", dict(_ENCODER, num_labels=3)),
}


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Norm weights and biases off their init; position tables and cls tokens off zero mean."""
    gen = torch.Generator().manual_seed(seed)
    norms = {name for name, m in model.named_modules() if "norm" in type(m).__name__.lower()}
    for name, p in model.named_parameters():
        owner = name.rpartition(".")[0]
        noise = torch.randn(p.shape, generator=gen)
        if name.endswith("bias") or owner in norms:
            p.add_(0.3 * noise)
        if "position" in name or "wpe" in name or "cls_token" in name:
            p.add_(0.5 + 0.1 * noise)
    return model.eval()


def build(name: str, seed: int = 0) -> nn.Module:
    """The small model `name` of `ZOO`, random weights from `seed`, perturbed, in eval mode."""
    import transformers

    transformers.logging.set_verbosity_error()
    config_cls, model_cls, kwargs = ZOO[name]
    config = getattr(transformers, config_cls)(**kwargs)
    torch.manual_seed(seed)
    return perturb(getattr(transformers, model_cls)(config), seed)
