"""CPU inference latency of surgery outputs against the bound of removing every norm.

    python benchmarks/bench_surgery.py --threads 2     # GPT-2-small and a Llama-like model
    python benchmarks/bench_surgery.py --quick         # tiny models, a smoke run

Both models are built from configs with random weights (no download): a GPT-2-small-sized
GPT2LMHeadModel (12 layers, width 768, 12 heads, vocabulary 50257, tied head) and a Llama-like
LlamaForCausalLM (12 layers, width 768, 12 heads, SwiGLU 2048, vocabulary 32000).

Variants: the source; "bound", the source with every norm replaced by nn.Identity (wrong
outputs, the fastest any norm surgery could make it); fold_norms (classes kept, norm weights 1);
FlashNorm (fold_norms(flash=True): norms removed, 1/rms after each reader's matmul); and, for
GPT-2, to_rmsnorm and to_crmsnorm (Llama is already on RMSNorm). For each model at batch
--batch × sequence 128, the variants are timed interleaved (one call of each per round, so
drift hits all alike) in eval mode under torch.inference_mode: median and 10th/90th
percentiles of --repeats rounds after --warmup rounds, the ratio of each median to the source
median of the same run, and the share of the bound it realizes,
(source − variant) / (source − bound). Each variant's max relative logit error against the
source (from its surgery report) is printed too. Rows are appended to
benchmarks/results/surgery.csv; the last line is a JSON summary.

glibc returns freed blocks above 32 MB to the OS by default, so every call that allocates a big
output page-faults it in again; the script re-executes itself with
MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=17179869184 unless they are set.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

from benchenv import MALLOC_ENV, cpu_model, use_big_malloc_thresholds

use_big_malloc_thresholds()

import torch  # noqa: E402  (after the re-exec)
import transformers  # noqa: E402
from torch import nn  # noqa: E402

from normlab.surgery import fold_norms, to_crmsnorm, to_rmsnorm  # noqa: E402
from normlab.surgery.ports import set_module  # noqa: E402
from normlab.surgery.select import norm_modules  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "surgery.csv"
SEQ = 128


def build(name: str, quick: bool) -> nn.Module:
    torch.manual_seed(0)
    if name == "gpt2-small":
        size = dict(n_embd=64, n_layer=2, n_head=2, vocab_size=500) if quick else {}
        config = transformers.GPT2Config(n_positions=1024, bos_token_id=0, eos_token_id=0, **size)
        return perturb_norms(transformers.GPT2LMHeadModel(config).eval())
    size = (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, vocab_size=500)
        if quick else
        dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
             num_attention_heads=12, num_key_value_heads=12, vocab_size=32000)
    )
    config = transformers.LlamaConfig(max_position_embeddings=1024, **size)
    return perturb_norms(transformers.LlamaForCausalLM(config).eval())


@torch.no_grad()
def perturb_norms(model: nn.Module) -> nn.Module:
    """Move every norm γ/β off (1, 0) so that the folds and conversions do real work."""
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "ln_" in name or "norm" in name:
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def without_norms(source: nn.Module) -> nn.Module:
    """The source with every norm replaced by nn.Identity: the latency bound."""
    model = copy.deepcopy(source)
    for path in norm_modules(model):
        set_module(model, path, nn.Identity())
    return model


def variants(name: str, source: nn.Module) -> dict[str, tuple[nn.Module, float]]:
    """name -> (model, max rel logit error reported by the surgery; NaN for the bound)."""
    out = {"source": (source, 0.0), "bound": (without_norms(source), float("nan"))}
    ops = {"fold": fold_norms, "flashnorm": lambda m: fold_norms(m, flash=True)}
    if name == "gpt2-small":
        ops.update(rmsnorm=to_rmsnorm, crmsnorm=to_crmsnorm)
    for label, op in ops.items():
        model, report = op(copy.deepcopy(source))
        out[label] = (model, report.max_rel_error)
    return out


def time_round_robin(models: dict[str, nn.Module], ids: torch.Tensor, repeats: int, warmup: int):
    samples: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for r in range(warmup + repeats):
            for label, model in models.items():
                start = time.perf_counter()
                model(input_ids=ids, use_cache=False)
                if r >= warmup:
                    samples[label].append((time.perf_counter() - start) * 1e3)
    stats = {}
    for label, s in samples.items():
        s.sort()
        pick = lambda q, s=s: s[min(len(s) - 1, round(q * (len(s) - 1)))]  # noqa: E731
        stats[label] = (statistics.median(s), pick(0.1), pick(0.9))
    return stats


def save(rows: list[dict]) -> None:
    """Append `rows` to RESULTS; when the columns changed, rewrite it under the union of the
    columns (older rows leave the new ones empty)."""
    RESULTS.parent.mkdir(exist_ok=True)
    old = list(csv.DictReader(RESULTS.open())) if RESULTS.exists() else []
    fields = list(old[0]) if old else []
    fields += [k for k in rows[0] if k not in fields]
    with RESULTS.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(old + rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="tiny models (smoke run)")
    parser.add_argument("--no-save", action="store_true", help="do not append to the CSV")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    env = {
        "cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "malloc": " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()),
    }
    print(f"# bench_surgery {stamp}")
    for key, value in env.items():
        print(f"# {key}: {value}")
    print(f"# seq {SEQ}, fp32, eval, inference_mode; {args.repeats} rounds after "
          f"{args.warmup} warm-up rounds; times in ms: median [p10, p90]")
    rows = []
    for name in ("gpt2-small", "llama-like"):
        source = build(name, args.quick)
        models = variants(name, source)
        params = sum(p.numel() for p in source.parameters()) / 1e6
        print(f"\n{name} ({params:.0f}M parameters)")
        for batch in (args.batch,):
            vocab = source.config.vocab_size
            ids = torch.randint(0, vocab, (batch, SEQ), generator=torch.Generator().manual_seed(0))
            stats = time_round_robin(
                {k: m for k, (m, _) in models.items()}, ids, args.repeats, args.warmup
            )
            base, bound = stats["source"][0], stats["bound"][0]
            for label, (median, p10, p90) in stats.items():
                err = models[label][1]
                share = (base - median) / (base - bound) if base != bound else float("nan")
                print(f"  batch {batch} {label:9s} {median:9.1f} [{p10:.1f}, {p90:.1f}]  "
                      f"ratio {median / base:.3f}  share of bound {share:6.2f}  "
                      f"max rel logit error {err:.1e}")
                rows.append({
                    "time": stamp, "model": name, "batch": batch, "seq": SEQ, "variant": label,
                    "median_ms": round(median, 3), "p10_ms": round(p10, 3),
                    "p90_ms": round(p90, 3), "ratio_to_source": round(median / base, 4),
                    "share_of_bound": round(share, 4),
                    "max_rel_error": err, "quick": args.quick, **env,
                })
    if not args.no_save:
        save(rows)
    summary = {
        f"{r['model']}/b{r['batch']}/{r['variant']}": r["ratio_to_source"] for r in rows
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
