"""`probe=` works on every model: ModelOutputs and mappings are compared on their logits, else
their last hidden state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from normlab.surgery import fold_norms, swap_norms
from normlab.surgery.adapters.traced import model_output
from normlab.surgery.zoo import build

pytest.importorskip("transformers")


class Encoder(nn.Module):
    """No config, no adapter: a mapping output with a last hidden state."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return {"last_hidden_state": self.norm(self.proj(x)), "pooled": x.mean(1)}


def test_a_model_without_adapter_is_measured_on_its_last_hidden_state():
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))
    _, report = swap_norms(Encoder(), "dyt", approximate=True, probe=x)
    assert report.output == "output (2, 3, 8)" and report.max_abs_error > 0


def test_a_huggingface_model_is_measured_on_its_logits_with_user_inputs():
    source = build("qwen2")
    ids = torch.randint(0, 61, (3, 5), generator=torch.Generator().manual_seed(0))
    _, report = fold_norms(copy.deepcopy(source), probe={"input_ids": ids})
    assert report.output == "output (3, 5, 61)" and report.max_rel_error < 1e-5
    _, swapped = swap_norms(copy.deepcopy(source), "dyt", approximate=True, probe=ids)
    assert swapped.output == "output (3, 5, 61)" and swapped.max_rel_error > 1e-3


def test_model_output_refuses_what_it_cannot_compare():
    with pytest.raises(TypeError, match="neither"):
        model_output({"pooled": torch.zeros(1)})
    with pytest.raises(TypeError, match="tensor or a ModelOutput"):
        model_output("text")
