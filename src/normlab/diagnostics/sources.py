"""Models and data samples for `normlab diagnose`: HuggingFace folders, normlab GPT configs.

HuggingFace models load offline (HF_HUB_OFFLINE=1, local files only) from a `save_pretrained`
folder; `transformers` is imported inside `load_hf` only, so the rest of normlab never needs it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from normlab.models import GPT, GPTConfig

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def load_hf(path: str | Path) -> tuple[nn.Module, bool]:
    """A HuggingFace model from a `save_pretrained` folder and whether it is a causal LM.

    Causal LMs (config `architectures` ending in ForCausalLM / LMHeadModel) load with
    `AutoModelForCausalLM`, so the diagnostics see their own next-token loss; anything else
    loads with `AutoModel` (a bare encoder such as BERT or MiniLM).
    """
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} is not a HuggingFace model folder (no config.json); give "
                         "the directory written by model.save_pretrained(...)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise ValueError("--model needs the `transformers` package (the hf extra: "
                         "pip install 'normlab[hf]')") from None
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    causal = any(a.endswith(CAUSAL_SUFFIXES) for a in architectures)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    return auto.from_pretrained(folder, local_files_only=True), causal


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
    """A `GPTConfig` from field values; unknown fields raise ValueError listing the known ones."""
    fields = {f.name: f for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ValueError(f"unknown GPT config field(s) {unknown}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(GPTConfig)
    values = {}
    for key, value in settings.items():
        if hints[key] in (int, str, bool) and not isinstance(value, hints[key]):
            raise ValueError(f"GPT config {key}: expected {hints[key].__name__}, got {value!r}")
        values[key] = tuple(value) if isinstance(value, list) else value
    return GPTConfig(**values)


def parse_settings(pairs: list[str], config_file: str | Path | None = None) -> dict[str, Any]:
    """Field values from a JSON file (optional) updated by `key=value` pairs (YAML values)."""
    settings: dict[str, Any] = {}
    if config_file is not None:
        loaded = json.loads(Path(config_file).read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a JSON object of GPT config fields")
        settings.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r} must look like field=value, e.g. placement=lns")
        settings[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
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
