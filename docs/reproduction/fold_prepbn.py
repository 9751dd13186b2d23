"""Claim 7, speed half: a trained PRepBN model folded for inference against a LayerNorm model.

    python docs/reproduction/fold_prepbn.py runs/claim-7-prepbn/arms/prepbn-s0 \
        runs/claim-7/arms/layernorm-s0

Loads both trained models, folds every PRepBN (eval mode: a per-channel affine, SLAB, Guo et al.,
ICML 2024) into the Linear that reads it with `normlab.surgery.fold_norms`, checks that the
folded model computes the same validation loss, then times inference (batch 16 × 128 bytes,
torch.inference_mode) of the LayerNorm model, the unfolded and the folded PRepBN model,
interleaved: one call of each per round, median over the rounds and the ratio to LayerNorm.
"""

import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from normlab.bench import checkpoint
from normlab.bench import config as C
from normlab.bench import data as D
from normlab.bench.train import build_model
from normlab.surgery import fold_norms

ROUNDS = 60


def load(run: Path):
    raw = json.loads((run / "config.json").read_text())
    cfg = C.from_dict(C.RunConfig, raw)
    model = build_model(cfg)
    ckpt = checkpoint.load(checkpoint.latest(run), config=raw, expected=model.state_dict())
    model.load_state_dict(ckpt.model)
    return model.eval(), cfg


def val_loss(model, batches) -> float:
    with torch.no_grad():
        return sum(model(x, y)[1].item() for x, y in batches) / len(batches)


prepbn, cfg = load(Path(sys.argv[1]))
layernorm, _ = load(Path(sys.argv[2]))
batches = list(D.load_data(cfg.data).val_batches(8))
folded, report = fold_norms(copy.deepcopy(prepbn))
loss = {name: val_loss(m, batches) for name, m in
        (("layernorm", layernorm), ("prepbn", prepbn), ("prepbn folded", folded))}
removed = sum(1 for c in report.changes if "norm removed" in c.detail)
print(f"folded {removed} PRepBN layers; validation loss " +
      ", ".join(f"{k} {v:.6f}" for k, v in loss.items()))
print(f"folded − unfolded: {loss['prepbn folded'] - loss['prepbn']:+.2e}")

x = batches[0][0]
models = {"layernorm": layernorm, "prepbn": prepbn, "prepbn folded": folded}
times: dict[str, list[float]] = {k: [] for k in models}
with torch.inference_mode():
    for r in range(ROUNDS + 5):
        for name, m in models.items():
            start = time.perf_counter()
            m(x)
            if r >= 5:
                times[name].append((time.perf_counter() - start) * 1e3)
base = statistics.median(times["layernorm"])
print(f"threads {torch.get_num_threads()}, input {tuple(x.shape)}, {ROUNDS} interleaved rounds")
for name, t in times.items():
    med = statistics.median(t)
    print(f"{name:14s} median {med:7.3f} ms  ×{med / base:.3f} of layernorm")
