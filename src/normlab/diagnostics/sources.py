"""Models and data samples for `normlab diagnose`: normlab GPT configs, random batches.

HuggingFace folders load through `normlab.surgery.io.load_hf`, the one place that talks to
`transformers`; the batches for them need only the loaded model's config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from normlab.configs import from_dict, parse_override
from normlab.models import GPT, GPTConfig


def hf_batches(model: nn.Module, *, causal: bool, count: int, batch_size: int, seq_len: int,
               seed: int) -> list[dict[str, torch.Tensor]]:
    """Random-token batches for a HuggingFace model (labels = inputs for causal LMs)."""
    config = model.config
    longest = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions",
                                                                          None)
    if longest is not None and seq_len > longest:
        raise ValueError(f"--seq-len {seq_len} exceeds the model's {longest} positions")
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=generator)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if causal:
            batch["labels"] = ids
        batches.append(batch)
    return batches


def gpt_config(settings: dict[str, Any]) -> GPTConfig:
    """A `GPTConfig` from field values, each checked against its type (`normlab.configs`);
    an unknown field raises ValueError listing the known ones."""
    return from_dict(GPTConfig, settings, what="GPT config field")


def parse_settings(pairs: list[str], config_file: str | Path | None = None) -> dict[str, Any]:
    """Field values from a JSON file (optional) updated by `key=value` pairs (YAML values)."""
    settings: dict[str, Any] = {}
    if config_file is not None:
        loaded = json.loads(Path(config_file).read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a JSON object of GPT config fields")
        settings.update(loaded)
    settings.update(parse_override(pair) for pair in pairs)
    return settings


def build_gpt(settings: dict[str, Any], *, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(gpt_config(settings))


def token_batches(vocab_size: int, *, count: int, batch_size: int, seq_len: int,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random (inputs, next-token targets) batches for a normlab GPT."""
    generator = torch.Generator().manual_seed(seed)
    windows = [torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=generator)
               for _ in range(count)]
    return [(w[:, :-1], w[:, 1:]) for w in windows]
