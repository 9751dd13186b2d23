"""The effective-learning-rate diagnostic against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.diagnostics.effective_lr import effective_learning_rates, linear_weights


def test_against_a_hand_computation():
    fc1, fc2 = nn.Linear(2, 2, bias=False), nn.Linear(2, 3)
    with torch.no_grad():
        fc1.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # ‖W‖² = 25
        fc2.weight.fill_(0.5)  # ‖W‖² = 6 · 0.25 = 1.5
    model = nn.Sequential(fc1, nn.BatchNorm1d(2), fc2)
    model(torch.randn(16, 2)).pow(3).sum().backward()
    out = {r["name"]: r for r in effective_learning_rates(model, 0.3)}
    assert out["0.weight"]["norm"] == pytest.approx(5.0)
    assert out["0.weight"]["effective_lr"] == pytest.approx(0.3 / 25)
    assert out["2.weight"]["effective_lr"] == pytest.approx(0.3 / 1.5)
    assert out["0.weight"]["scale_invariant"] == "channel"  # a BatchNorm follows it
    assert out["2.weight"]["scale_invariant"] is None


def test_tied_weights_once_and_no_gradient():
    emb, head = nn.Embedding(5, 4), nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head, "other": nn.Linear(4, 4)})
    assert list(linear_weights(model)) == ["head.weight", "other.weight"]
    assert all(r["scale_invariant"] is None for r in effective_learning_rates(model, 1e-3))
    with pytest.raises(ValueError, match="lr must be positive"):
        effective_learning_rates(model, 0.0)
