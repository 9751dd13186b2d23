"""`normlab adapt`: a trained run's model evaluated on other data, and test-time normalization.

    normlab adapt eval RUN_DIR [--set data.path=DIR ...]      # no training: the "nothing" arm
    normlab adapt testtime RUN_DIR... [--corruption NAME ...] [--seeds 0 1] [--json FILE]

`eval` scores the run's latest checkpoint on the validation batches of its config with the
`--set` overrides applied (the data of an adaptation target), as the bench's own evaluation
does: mean loss over `train.eval_batches` fixed batches (and accuracy on the digits).

`testtime` takes ViT runs trained on the digits and, for each corruption (`normlab.adapt.
corrupt`, seeded) and each test stream — `iid` (a seeded shuffle) and `sorted` (by label: the
temporally correlated stream of UnMix-TNS) — measures the accuracy over the whole stream of:
`source` (no adaptation), `bn` (each test batch normalized by its own statistics, no update),
`adabn` (running statistics := the target set's moments), `tent` (entropy minimization of the
norms' parameters, online) and `unmix` (UnMix-TNS mixed statistics). Methods that need batch
statistics are left out for a model without them. Each (run, seed) pair starts from the
run's weights; the table gives the mean accuracy and its range over the pairs.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from normlab.adapt import CORRUPTIONS, Tent, UnMixTNS, adabn, batch_norm_layers, corrupt
from normlab.adapt.statistics import batch_statistics, logits_of
from normlab.bench.data import DigitsData, load_data
from normlab.bench.init_from import run_model
from normlab.bench.metrics import read_json
from normlab.bench.presets import resolve
from normlab.configs import parse_override, set_field

STREAMS = ("iid", "sorted")
METHODS = ("source", "bn", "adabn", "tent", "unmix")


@torch.no_grad()
def evaluate_run(run_dir: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Validation loss (and accuracy) of the run's latest checkpoint on its data config with
    `overrides` (`section.field=value`) applied."""
    cfg = resolve(read_json(Path(run_dir) / "config.json"))
    for text in overrides:
        key, value = parse_override(text)
        set_field(cfg, key, value)
    cfg = resolve(cfg.to_dict())
    model, step = run_model(run_dir)
    data = load_data(cfg.data)
    loss_sum = correct = count = 0.0
    for inputs, targets in data.val_batches(cfg.train.eval_batches):
        logits, loss = model(inputs, targets)
        loss_sum += float(loss) * targets.numel()
        correct += float((logits.argmax(-1) == targets).sum())
        count += targets.numel()
    result = {"run": str(run_dir), "step": step, "val_loss": loss_sum / count,
              "data": cfg.data.path or cfg.data.source}
    if data.has_accuracy:
        result["val_acc"] = correct / count
    return result


def stream(images: Tensor, labels: Tensor, order: str, batch_size: int,
           seed: int) -> list[tuple[Tensor, Tensor]]:
    """The test set as batches in `order`: "iid" (a seeded permutation) or "sorted" (by
    label, stable)."""
    if order == "iid":
        index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    else:
        index = torch.sort(labels, stable=True).indices
    return [(images[i], labels[i]) for i in index.split(batch_size)]


@torch.no_grad()
def _predict(model: nn.Module, batches) -> list[Tensor]:
    return [logits_of(model, x).argmax(-1) for x, _ in batches]


def adapted_predictions(model: nn.Module, method: str, batches) -> list[Tensor]:
    """The predicted classes of each batch of the stream under `method` (on a copy of model)."""
    model = copy.deepcopy(model).eval()
    if method == "source":
        return _predict(model, batches)
    if method == "bn":
        with batch_statistics(model):
            return _predict(model, batches)
    if method == "adabn":
        adabn(model, [x for x, _ in batches])
        return _predict(model, batches)
    if method == "tent":
        tent = Tent(model)
        return [tent(x).argmax(-1) for x, _ in batches]
    if method == "unmix":
        UnMixTNS(model)
        return _predict(model, batches)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def testtime(run_dirs: list[Path], corruptions: list[str], seeds: list[int],
             batch_size: int = 64) -> dict[str, Any]:
    """Accuracy per (corruption, stream, method) over every (run, seed) pair (module doc)."""
    results: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        cfg = resolve(read_json(Path(run_dir) / "config.json"))
        if cfg.model.kind != "vit":
            raise ValueError(f"testtime needs a ViT run on the digits; {run_dir} is a "
                             f"{cfg.model.kind}")
        model, _ = run_model(run_dir)
        data = DigitsData(cfg.data)
        has_batch = bool(batch_norm_layers(model))
        methods = [m for m in METHODS if has_batch or m in ("source", "tent")]
        for seed in seeds:
            for name in corruptions:
                images = data.val_images if name == "none" else \
                    corrupt(data.val_images, name, seed=seed)
                for order in STREAMS:
                    batches = stream(images, data.val_labels, order, batch_size, seed)
                    for method in methods:
                        preds = torch.cat(adapted_predictions(model, method, batches))
                        labels = torch.cat([y for _, y in batches])
                        results.append({"run": str(run_dir), "seed": seed, "corruption": name,
                                        "stream": order, "method": method,
                                        "acc": float((preds == labels).float().mean())})
    return {"runs": [str(r) for r in run_dirs], "seeds": seeds, "batch_size": batch_size,
            "corruption_severity": {c: CORRUPTIONS.get(c) for c in corruptions},
            "results": results, "table": summarize(results)}


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean accuracy and its range over (run, seed) per (corruption, stream, method)."""
    groups: dict[tuple, list[float]] = {}
    for r in results:
        groups.setdefault((r["corruption"], r["stream"], r["method"]), []).append(r["acc"])
    return [{"corruption": c, "stream": s, "method": m, "n": len(v),
             "acc_mean": statistics.fmean(v), "acc_min": min(v), "acc_max": max(v)}
            for (c, s, m), v in groups.items()]


def _table(rows: list[dict[str, Any]]) -> Table:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = Table(title="test-time accuracy: mean (min–max) over runs × seeds")
    for column in ("corruption", "stream", *methods):
        table.add_column(column)
    cells: dict[tuple, dict[str, str]] = {}
    for r in rows:
        cells.setdefault((r["corruption"], r["stream"]), {})[r["method"]] = \
            f"{r['acc_mean']:.3f} ({r['acc_min']:.3f}–{r['acc_max']:.3f})"
    for (corruption, order), row in cells.items():
        table.add_row(corruption, order, *(row.get(m, "—") for m in methods))
    return table


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `adapt` (with `eval` and `testtime`) on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "adapt", help="evaluate a run on other data; test-time normalization on the digits",
        description=__doc__.split("\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    ev = actions.add_parser("eval", help="a run's model on other data, without training")
    ev.add_argument("run", type=Path, metavar="RUN_DIR")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of the run's config, e.g. data.path=DIR")
    ev.set_defaults(func=_eval)
    tt = actions.add_parser("testtime", help="AdaBN, Tent, UnMix-TNS on corrupted digits")
    tt.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="ViT digits runs")
    tt.add_argument("--corruption", dest="corruptions", action="append", default=None,
                    choices=["none", *CORRUPTIONS],
                    help="repeatable (default: none and every corruption)")
    tt.add_argument("--seeds", nargs="+", type=int, default=[0],
                    help="seeds of the corruptions and the iid order")
    tt.add_argument("--batch-size", type=int, default=64)
    tt.add_argument("--json", type=Path, default=None, help="write the results here")
    tt.set_defaults(func=_testtime)
    return parser


def _eval(args: argparse.Namespace) -> int:
    print(json.dumps(evaluate_run(args.run, args.overrides)))
    return 0


def _testtime(args: argparse.Namespace) -> int:
    if args.batch_size < 2:
        raise ValueError("--batch-size must be at least 2 (batch statistics)")
    corruptions = args.corruptions or ["none", *CORRUPTIONS]
    out = testtime(args.runs, corruptions, args.seeds, args.batch_size)
    Console().print(_table(out["table"]))
    if args.json is not None:
        if args.json.exists():
            raise ValueError(f"{args.json} exists; choose a new file")
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0
