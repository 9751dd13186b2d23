"""Norm-only tuning of the digits ViT under a shift: full vs norms vs head vs nothing.

    python benchmarks/bench_adapt_vit.py RUN_DIR... [--steps 60] [--lr 3e-3] [--out FILE]

Each RUN_DIR is a ViT trained on clean digits (`normlab bench --preset vit-bn`). For each run
and each corruption of `normlab.adapt.CORRUPTIONS` (default severity, the training and the
validation images corrupted with seed 0 and 1), the run's model is fine-tuned on the corrupted
training split for --steps AdamW steps (batch 64, no weight decay, constant --lr, batches drawn
with seed 0) with only the parts of `normlab.adapt.norm_only` trainable — `all` (full
fine-tuning), `norms`, `head`, or `none` (no step: the source model) — and scored on the
corrupted validation split. Prints one row per (corruption, arm): accuracy, mean and range over
the runs, and the trainable parameters; the last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch

from normlab.adapt import CORRUPTIONS, corrupt, norm_only
from normlab.bench.data import DigitsData
from normlab.bench.init_from import run_model
from normlab.bench.metrics import read_json
from normlab.bench.presets import resolve

ARMS = ("none", "all", "norms", "head")


def fine_tune(model, arm: str, images, labels, steps: int, lr: float) -> int:
    """Train the `arm` part of `model` in place; returns its trainable parameter count."""
    if arm == "none":
        return 0
    if arm == "all":
        model.requires_grad_(True)
    else:
        norm_only(model, arm)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(labels), (64,), generator=gen)
        _, loss = model(images[index], labels[index])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return sum(p.numel() for p in params)


@torch.no_grad()
def accuracy(model, images, labels) -> float:
    model.eval()
    return float((model(images)[0].argmax(-1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--corruption", dest="corruptions", action="append", default=None,
                        choices=list(CORRUPTIONS))
    parser.add_argument("--out", type=Path, default=None, help="write the JSON summary here")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: dict[tuple[str, str], dict] = {}
    for run in args.runs:
        data = DigitsData(resolve(read_json(run / "config.json")).data)
        source, _ = run_model(run)
        for name in args.corruptions or list(CORRUPTIONS):
            train_x = corrupt(data.train_images, name, seed=0)
            val_x = corrupt(data.val_images, name, seed=1)
            for arm in ARMS:
                model = copy.deepcopy(source)
                count = fine_tune(model, arm, train_x, data.train_labels, args.steps, args.lr)
                row = rows.setdefault((name, arm), {"corruption": name, "arm": arm,
                                                    "trainable": count, "acc": []})
                row["acc"].append(accuracy(model, val_x, data.val_labels))
    total = sum(p.numel() for p in source.parameters())
    print(f"{'corruption':<15} {'arm':<6} {'acc mean':>8} {'min–max':>13} {'trainable':>10}")
    for row in rows.values():
        row["acc_mean"] = statistics.fmean(row["acc"])
        print(f"{row['corruption']:<15} {row['arm']:<6} {row['acc_mean']:8.3f} "
              f"{min(row['acc']):6.3f}–{max(row['acc']):.3f} {row['trainable']:10,}")
    summary = {"runs": [str(r) for r in args.runs], "steps": args.steps, "lr": args.lr,
               "total_params": total, "rows": list(rows.values())}
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
