"""Share of a CPU training step that goes to the norms and to the residual adds.

    python benchmarks/bench_step_share.py --threads 2

Profiles ten AdamW steps of the Pre-LN GPT of the quick preset's family (4 blocks, d = 128,
batch 16 × 128 bytes) with LayerNorm and with RMSNorm, and prints the self CPU time of the norm
ops and of every `aten::add` as a fraction of the step. Fusing a residual add into the next
norm (`normlab.kernels.add_rms_norm`) can save at most the add's share.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench_training_throughput import make_step
from normlab.models import GPT, GPTConfig


def profile_steps(norm: str, steps: int):
    """The profiler's per-op averages over `steps` training steps of the GPT with `norm`."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(depth=4, dim=128, heads=4, norm=norm, block_size=128))
    tokens = torch.randint(0, 256, (16, 129))
    step = make_step("normlab", model, (tokens[:, :-1], tokens[:, 1:]))
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages()


def share(events, keep) -> float:
    """The fraction of all self CPU time spent in the ops whose names `keep` accepts."""
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if keep(e.key)) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for norm in ("layernorm", "rmsnorm"):
        events = profile_steps(norm, args.steps)
        step_ms = sum(e.self_cpu_time_total for e in events) / args.steps / 1e3
        norms = share(events, lambda k: "layer_norm" in k or "normlab" in k or "rms_norm" in k)
        adds = share(events, lambda k: k in ("aten::add", "aten::add_"))
        print(f"{norm:10s} step {step_ms:6.1f} ms   norms {norms:5.1%}   aten::add {adds:5.1%}")


if __name__ == "__main__":
    main()
