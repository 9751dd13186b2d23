"""z-loss: PaLM's (log Z)² penalty, against its formula and in the training loop."""

from __future__ import annotations

import pytest
import torch

from normlab.bench import train
from normlab.bench.metrics import read_metrics
from normlab.bench.presets import load_preset
from normlab.models.lm import z_loss


def test_z_loss_is_the_mean_squared_log_normalizer():
    logits = torch.randn(3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    log_z = logits.exp().sum(-1).log()
    assert torch.allclose(z_loss(logits), log_z.pow(2).mean().float(), rtol=1e-6)
    shifted = logits - torch.logsumexp(logits, -1, keepdim=True)  # log Z = 0 everywhere
    assert z_loss(shifted).item() == pytest.approx(0.0, abs=1e-10)
    assert z_loss(logits.bfloat16()).dtype == torch.float32


def _losses(tmp_path, cache_dir, name, *overrides):
    cfg, _ = load_preset("smoke", ["placement.name=pre", "norm.name=layernorm", "train.steps=3",
                                   f"data.cache_dir={cache_dir}", *overrides])
    train.run(cfg, tmp_path / name)
    return [r["loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl")
            if r["kind"] == "train"]


def test_z_loss_changes_the_update_not_the_logged_cross_entropy(tmp_path, cache_dir):
    plain = _losses(tmp_path, cache_dir, "plain")
    with_z = _losses(tmp_path, cache_dir, "z", "optim.z_loss=0.1")
    assert with_z[0] == plain[0]  # the same weights and batch: the same cross-entropy
    assert with_z[1:] != plain[1:]  # the penalty moved the weights
    with pytest.raises(ValueError, match=r"optim\.z_loss must be >= 0"):
        load_preset("smoke", ["optim.z_loss=-1e-4"])
