"""Training tokens/s of normlab's GPT or Llama against the `transformers` model of the same size.

    python benchmarks/bench_training_throughput.py                 # GPT vs GPT2LMHeadModel
    python benchmarks/bench_training_throughput.py --model llama   # Llama vs LlamaForCausalLM
    python benchmarks/bench_training_throughput.py --quick         # a smoke run

Both models are built with random weights (no download), byte vocabulary (256), no dropout,
attention through scaled_dot_product_attention (HuggingFace: attn_implementation="sdpa").
`gpt`: tied LM head, learned positions, Pre-LN LayerNorm blocks with a 4x GELU MLP and biases.
`llama`: normlab's Llama under Pre-LN RMSNorm (RoPE, SwiGLU, no biases, untied head, --kv-heads
key/value heads) and its exact `transformers` twin (`normlab.hf.to_hf`). One timed step is the
same for both: forward with targets (mean cross-entropy), backward, AdamW step, zero_grad.
Rounds alternate the two models (--steps steps each per round, after --warmup rounds), so drift
hits both alike; tokens/s is the median over --repeats rounds, with the 10th/90th percentiles,
and the ratio normlab / HuggingFace of the medians. Rows are appended to
benchmarks/results/training_throughput_<model>.csv; the last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from torch import nn

from benchenv import cpu_model
from normlab.hf import to_hf
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig

RESULTS = Path(__file__).resolve().parent / "results"


def build_llama(args: argparse.Namespace) -> tuple[nn.Module, nn.Module]:
    ours = Llama(LlamaConfig(vocab_size=256, block_size=args.seq, depth=args.depth,
                             dim=args.dim, heads=args.heads, kv_heads=args.kv_heads,
                             norm="rmsnorm", placement="pre", dropout=0.0))
    theirs = to_hf(ours)
    theirs.config._attn_implementation = "sdpa"
    return ours, theirs


def build_gpt(args: argparse.Namespace) -> tuple[nn.Module, nn.Module]:
    ours = GPT(GPTConfig(vocab_size=256, block_size=args.seq, depth=args.depth, dim=args.dim,
                         heads=args.heads, mlp_ratio=4.0, norm="layernorm", placement="pre",
                         dropout=0.0, bias=True, tie_embeddings=True))
    hf_config = transformers.GPT2Config(
        vocab_size=256, n_positions=args.seq, n_embd=args.dim, n_layer=args.depth,
        n_head=args.heads, n_inner=4 * args.dim, activation_function="gelu",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0,
    )
    hf_config._attn_implementation = "sdpa"
    return ours, transformers.GPT2LMHeadModel(hf_config)


def build(args: argparse.Namespace, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    ours, theirs = (build_llama if args.model == "llama" else build_gpt)(args)
    return {"normlab": ours.to(device).train(), "hf": theirs.to(device).train()}


def make_step(name: str, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if name == "normlab":
        def loss_fn():
            return model(x, y)[1]
    else:
        # HF shifts labels inside; passing the window x + last target keeps the same T tokens
        window = torch.cat([x, y[:, -1:]], dim=1)

        def loss_fn():
            return model(input_ids=window[:, :-1], labels=window[:, :-1]).loss

    def step():
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("gpt", "llama"), default="gpt")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2, help="the Llama's key/value heads")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per model per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few rounds")
    parser.add_argument("--no-save", action="store_true", help="do not append to the CSV")
    args = parser.parse_args()
    if args.quick:
        args.depth, args.dim, args.seq, args.batch = 2, 64, 64, 4
        args.steps, args.warmup, args.repeats = 2, 1, 3
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else cpu_model(),
        "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS", ""),
    }
    print("# " + " | ".join(f"{k}={v}" for k, v in env.items()))
    models = build(args, device)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    print(f"# params: {params}  (batch {args.batch} x seq {args.seq}, depth {args.depth}, "
          f"width {args.dim}, heads {args.heads})")
    generator = torch.Generator().manual_seed(0)
    window = torch.randint(0, 256, (args.batch, args.seq + 1), generator=generator)
    batch = (window[:, :-1].to(device), window[:, 1:].to(device))
    steps = {name: make_step(name, m, batch) for name, m in models.items()}
    tokens = args.batch * args.seq * args.steps
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(args.warmup + args.repeats):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            if round_ >= args.warmup:
                speeds[name].append(tokens / (time.perf_counter() - start))
    summary = {}
    for name, values in speeds.items():
        values = sorted(values)
        q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
        summary[name] = {"median": statistics.median(values), "p10": q[0], "p90": q[-1]}
        print(f"{name:8s} tokens/s median {summary[name]['median']:12,.0f}  "
              f"p10 {q[0]:12,.0f}  p90 {q[-1]:12,.0f}")
    ratio = summary["normlab"]["median"] / summary["hf"]["median"]
    print(f"ratio normlab / hf ({type(models['hf']).__name__}): {ratio:.3f}")
    row = {**env, "model": args.model, "depth": args.depth, "dim": args.dim,
           "heads": args.heads, "seq": args.seq,
           "batch": args.batch, "params_normlab": params["normlab"],
           "params_hf": params["hf"],
           "normlab_tok_s": round(summary["normlab"]["median"]),
           "hf_tok_s": round(summary["hf"]["median"]), "ratio": round(ratio, 4),
           "repeats": args.repeats, "steps_per_round": args.steps}
    if not args.no_save:
        results = RESULTS / f"training_throughput_{args.model}.csv"
        results.parent.mkdir(parents=True, exist_ok=True)
        new = not results.exists()
        with results.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
    print(json.dumps({"ratio": round(ratio, 4), **{f"{k}_tok_s": round(v["median"])
                                                    for k, v in summary.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
