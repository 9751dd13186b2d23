"""`normlab bench` end to end on the smoke preset, and `normlab report` from the JSON alone."""

from __future__ import annotations

import json
import shutil
import statistics

from normlab import cli
from normlab.bench.metrics import read_metrics


def independent_numbers(run_dir):
    """Final val loss, divergence step and median tokens/s, read straight from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r["val_loss"] for r in records if r["kind"] == "eval"]
    diverged = [r["step"] for r in records if r["kind"] == "diverged"]
    speeds = [r["tokens_per_s"] for r in records if r["kind"] == "train"]
    speeds = speeds[max(1, len(speeds) // 10):] or speeds
    return (None if diverged else evals[-1]), (diverged[0] if diverged else None), \
        (statistics.median(speeds) if speeds else None)


def test_smoke_bench_report_matches_the_metrics(tmp_path, cache_dir):
    out = tmp_path / "sweep"
    # one lr diverges on purpose: the sweep must go on and the report must flag it
    code = cli.main(["bench", "--preset", "smoke", "--out", str(out), "--no-progress",
                     "--set", f"data.cache_dir={cache_dir}", "--set", "norm.name=layernorm",
                     "--set", "optim.lr=[3e-3, 1e4]", "--set", "optim.grad_clip=0"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["arm"].split(" ")[0] + " " + r["arm"].split("=")[-1].rstrip("]"): r
            for r in report["arms"]}
    assert report["baseline"] == "pre/layernorm [optim.lr=0.003]"
    assert len(report["arms"]) == 4
    timing = json.loads((out / "timing.json").read_text())
    assert timing["baseline"] == "pre-s0-lr3e-3"
    timing = timing["arms"]
    markdown = (out / "report.md").read_text()
    for placement in ("pre", "post"):
        good = rows[f"{placement}/layernorm 0.003"]
        loss, diverged_at, _ = independent_numbers(out / "arms" / f"{placement}-s0-lr3e-3")
        assert good["val_loss_mean"] == loss and not good["diverged"]
        # speed: the median ratio of the back-to-back (arm, baseline) pairs
        entry = timing[f"{placement}-s0-lr3e-3"]
        assert len(entry["tokens_per_s"]) == len(entry["baseline_tokens_per_s"]) == 3
        ratios = [a / b for a, b in zip(entry["tokens_per_s"], entry["baseline_tokens_per_s"],
                                        strict=True)]
        assert good["speed_ratio"] == statistics.median(ratios)
        assert (good["speed_ratio_low"], good["speed_ratio_high"]) == (min(ratios), max(ratios))
        assert good["peak_tensor_bytes"] > 0
        assert f"{loss:.4f}" in markdown
        bad = rows[f"{placement}/layernorm 10000.0"]
        loss, diverged_at, _ = independent_numbers(out / "arms" / f"{placement}-s0-lr1e4")
        assert loss is None and bad["val_loss_mean"] is None
        assert bad["diverged"] == [{"seed": 0, "step": diverged_at}]
        assert f"seed 0 @ step {diverged_at}" in markdown
    means = [r["val_loss_mean"] for r in report["arms"]]
    assert means[:2] == sorted(means[:2]) and means[2:] == [None, None]  # best first
    # one seed gives no interval: no arm may be called best
    assert report["verdict"]["best"] is None
    assert "No arm is better than the noise at 1 seed" in markdown and "Best arm" not in markdown
    for name in ("train_loss", "val_loss", "final_val_loss", "speed_memory"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the report is redrawn from the JSON files alone
    before = (out / "report.json").read_text()
    shutil.rmtree(out / "plots")
    (out / "report.json").unlink()
    (out / "report.md").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.json").read_text() == before
    assert (out / "plots" / "val_loss.png").is_file()

    # running the sweep again skips finished arms (metrics untouched)
    arm = out / "arms" / "pre-s0-lr3e-3"
    metrics = (arm / "metrics.jsonl").read_text()
    assert cli.main(["train", "--resume", str(arm), "--no-progress"]) == 0
    assert (arm / "metrics.jsonl").read_text() == metrics
    assert read_metrics(arm / "metrics.jsonl")[-1]["kind"] == "eval"


def test_ci95_is_the_t_interval_of_the_mean():
    from normlab.bench.report import ci95_half_width

    assert ci95_half_width([2.0]) is None
    # n = 3: t(0.975, 2) = 4.303, s = 1 -> 4.303 / sqrt(3)
    assert abs(ci95_half_width([1.0, 2.0, 3.0]) - 4.303 / 3**0.5) < 1e-9
    # n = 2: t(0.975, 1) = 12.706; [0, 1] has s = 1/√2, so 12.706 · (1/√2)/√2 = 12.706 / 2
    assert abs(ci95_half_width([0.0, 1.0]) - 12.706 * 0.5) < 1e-9
    # past 30 degrees of freedom the normal quantile is used
    values = [float(i % 2) for i in range(40)]
    expected = 1.960 * statistics.stdev(values) / 40**0.5
    assert abs(ci95_half_width(values) - expected) < 1e-12
