"""LR sweeps: the LR-sensitivity metric (Wortsman et al. 2023) by hand, the curves read from
runs, and the report's section and plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from normlab.bench import report
from normlab.bench.lr_sensitivity import lr_curves, lr_sensitivity
from normlab.bench.runs import Run


def test_lr_sensitivity_by_hand():
    # grid of 4 rates: losses 3.0, 2.5, 2.2 and a diverged run, loss at init 5.5
    # capped: 3.0, 2.5, 2.2, 5.5 -> mean 13.2 / 4 = 3.3; best 2.2 -> 1.1
    assert lr_sensitivity([3.0, 2.5, 2.2, None], 5.5) == pytest.approx(1.1)
    # a loss above the init loss is capped at it: [5.0, 2.0] -> 3.5 - 2.0
    assert lr_sensitivity([6.0, 2.0], 5.0) == pytest.approx(1.5)
    assert lr_sensitivity([2.0, 2.0, 2.0], 5.0) == 0.0
    assert lr_sensitivity([None, None], 5.0) is None
    with pytest.raises(ValueError, match="grid is empty"):
        lr_sensitivity([], 5.0)


def _run(tmp: Path, qk: str | None, lr: float, seed: int, final: float | None,
         init: float = 5.5) -> Run:
    config = {"model": {"kind": "llama", "qk_norm": qk}, "norm": {"name": "rmsnorm"},
              "placement": {"name": "pre"}, "optim": {"lr": lr},
              "train": {"seed": seed, "steps": 10}, "data": {"cache_dir": None}}
    records = [{"kind": "train", "step": 1, "loss": init, "tokens_per_s": 1.0}]
    if final is None:
        records.append({"kind": "diverged", "step": 5, "loss": float("nan")})
    else:
        records += [{"kind": "train", "step": 10, "loss": final, "tokens_per_s": 1.0},
                    {"kind": "eval", "step": 10, "val_loss": final}]
    summary = {"final_val_loss": final, "diverged_step": None if final else 5}
    status = "completed" if final is not None else "diverged"
    return Run(tmp / f"{qk}-{lr}-{seed}", config, records, status, summary)


def _sweep(tmp: Path) -> list[Run]:
    return [
        _run(tmp, None, 1e-3, 0, 3.0), _run(tmp, None, 1e-2, 0, 2.2),
        _run(tmp, None, 1e-1, 0, None),
        _run(tmp, "per_head", 1e-3, 0, 3.1), _run(tmp, "per_head", 1e-2, 0, 2.3),
        _run(tmp, "per_head", 1e-1, 0, 2.5), _run(tmp, "per_head", 1e-1, 1, 2.7, init=5.3),
    ]


def test_curves_from_runs(tmp_path):
    off, on = lr_curves(_sweep(tmp_path))
    assert "qk_norm=None" in off["arm"] and "qk_norm=per_head" in on["arm"]
    assert [p["lr"] for p in off["points"]] == [1e-3, 1e-2, 1e-1]
    assert off["points"][2]["diverged_seeds"] == [0]
    # off: capped 3.0, 2.2, 5.5 -> mean 3.5667 - 2.2
    assert off["lr_sensitivity"] == pytest.approx((3.0 + 2.2 + 5.5) / 3 - 2.2)
    assert (off["best_loss"], off["best_lr"], off["init_loss"]) == (2.2, 1e-2, 5.5)
    # on: l0 is the mean first-step loss over its 4 runs; lr 1e-1 is the mean of 2 seeds
    assert on["init_loss"] == pytest.approx((5.5 * 3 + 5.3) / 4)
    assert on["points"][2]["loss"] == pytest.approx(2.6)
    assert on["lr_sensitivity"] == pytest.approx((3.1 + 2.3 + 2.6) / 3 - 2.3)


def test_no_curve_without_two_rates(tmp_path):
    assert lr_curves([_run(tmp_path, None, 1e-3, s, 3.0) for s in range(2)]) == []


def test_the_report_has_the_section_and_the_plot(tmp_path):
    table = report.build_table(_sweep(tmp_path))
    text = report.lr_sweep_section(table, "plots/lr_sensitivity.png")
    assert text[0] == "## Learning-rate sensitivity"
    row = next(line for line in text if "qk_norm=None" in line)
    assert "| 1.3667 |" in row and "(diverged 1/1)" in row
    from normlab.bench import plots

    path = plots.lr_sensitivity(table, tmp_path / "plots" / "lr_sensitivity.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert plots.lr_sensitivity({"lr_sweep": []}, tmp_path / "none.png") is None


@pytest.mark.slow
def test_an_lr_sweep_runs_end_to_end(tmp_path):
    from normlab import cli

    out = tmp_path / "lr"
    status = cli.main(["bench", "--preset", "lr-sweep", "--out", str(out), "--no-progress",
                       "--timing-rounds", "0", "--set", "optim.lr=[1e-3,1e-1]",
                       "--set", "train.steps=3", "--set", "train.eval_every=3",
                       "--set", "train.checkpoint_every=3", "--set", "train.eval_batches=1"])
    assert status == 0
    text = (out / "report.md").read_text()
    assert "## Learning-rate sensitivity" in text and "lr_sensitivity.png" in text
    assert (out / "plots" / "lr_sensitivity.png").is_file()
