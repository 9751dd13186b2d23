"""Run the claims of a preset seed by seed until each is decided, then write its summary.

    summaries = run_study("claim-3", Path("docs/reproduction"))

Layout under ROOT: the runs of preset P are ROOT/P/arms/<name> (the same names and configs as
`normlab bench --preset P --out ROOT/P`; ROOT/P/sweep.json lists every arm run so far), and the
summary of P's claims is ROOT/P/study.json. Seed k of every open claim is run (both arms, same
seed: same initialization stream and batches) before seed k + 1, and the stopping rule
(`study/sequential.py`) looks after every seed. A claim stops at its first decided look or at
its budget; the preset stops when all its claims have. Finished runs are read back, never
re-run, and an interrupted run continues from its latest checkpoint, so running the same command
again continues the study where it stopped. With `train=False` nothing is trained: the study is
summarized from the runs already on disk, up to the first seed that lacks one.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from normlab.bench import train as training
from normlab.bench.config import RunConfig
from normlab.bench.metrics import read_json, write_atomic
from normlab.bench.rundir import SWEEP_MARKER, config_hash, mismatch
from normlab.bench.runs import read_run
from normlab.bench.runtime import Runtime
from normlab.study.claims import ArmRef, Claim, arm_run, folder_name, load_claims
from normlab.study.sequential import DEFAULT_ALPHA, PROCEDURE, sequence

SUMMARY = "study.json"
Announce = Callable[[str], None]


def _run_dir(root: Path, ref: ArmRef, name: str) -> Path:
    return root / folder_name(ref.preset) / "arms" / name


def _record_arm(root: Path, preset: str, name: str, cfg: RunConfig) -> None:
    """Add the arm to ROOT/preset/sweep.json (created if absent), keeping the arms already
    listed, so `normlab report` and `normlab bench` recognize the folder."""
    path = root / folder_name(preset) / SWEEP_MARKER
    arms = read_json(path)["arms"] if path.is_file() else {}
    if name not in arms:
        arms[name] = {"config_sha256": config_hash(cfg.to_dict()), "config": cfg.to_dict()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"arms": arms}, indent=2) + "\n")


def _value(run_dir: Path, metric: str) -> tuple[str, float | None]:
    run = read_run(run_dir)
    value = run.summary.get(metric) if run.status == "completed" else None
    return run.status, value


class Study:
    """The claims of one preset and the runs they have read so far."""

    def __init__(self, preset: str, root: Path, *, overrides: list[str] = (),
                 budget: int | None = None, alpha: float = DEFAULT_ALPHA) -> None:
        self.preset, self.root, self.alpha = preset, Path(root), alpha
        self.overrides = list(overrides)
        if any(text.split("=", 1)[0].strip() == "train.seed" for text in self.overrides):
            raise ValueError("the study chooses the seeds; drop --set train.seed")
        self.claims = load_claims(preset)
        if not self.claims:
            raise ValueError(f"preset {preset!r} has no claims: section")
        if budget is not None:
            self.claims = [replace(c, budget=budget) for c in self.claims]
        self.seeds: dict[str, list[dict[str, Any]]] = {c.id: [] for c in self.claims}

    def looks(self, claim: Claim):
        return sequence([s["delta"] for s in self.seeds[claim.id]], expect=claim.expect,
                        margin=claim.margin, budget=claim.budget, alpha=self.alpha)

    def is_open(self, claim: Claim) -> bool:
        done = self.seeds[claim.id]
        return len(done) < claim.budget and not (done and self.looks(claim)[-1].decided)

    def runs_of_seed(self, seed: int) -> dict[tuple[str, str], tuple[ArmRef, RunConfig]]:
        """{(preset, name): (arm, config)} of every run the open claims need at `seed`."""
        wanted = {}
        for claim in filter(self.is_open, self.claims):
            for ref in claim.runs:
                name, cfg = arm_run(ref, seed, self.overrides)
                wanted[(ref.preset, name)] = (ref, cfg)
        return wanted

    def add_seed(self, seed: int) -> None:
        """Read seed `seed` of both arms of every open claim (their runs exist)."""
        for claim in filter(self.is_open, self.claims):
            values = {}
            for role, ref in zip(("arm", "baseline"), claim.runs, strict=True):
                name, _ = arm_run(ref, seed, self.overrides)
                values[role] = _value(_run_dir(self.root, ref, name), claim.metric)
            (arm_status, arm), (base_status, base) = values["arm"], values["baseline"]
            delta = arm - base if arm is not None and base is not None else None
            self.seeds[claim.id].append({"seed": seed, "arm": arm, "baseline": base,
                                         "arm_status": arm_status,
                                         "baseline_status": base_status, "delta": delta})

    def summary(self) -> dict[str, Any]:
        return {"preset": self.preset, "overrides": self.overrides, "alpha": self.alpha,
                "procedure": PROCEDURE.format(alpha=self.alpha),
                "claims": [claim_summary(c, self.seeds[c.id], self.looks(c))
                           for c in self.claims]}


def claim_summary(claim: Claim, seeds: list[dict[str, Any]], looks) -> dict[str, Any]:
    """The JSON record of one claim: its definition, every seed, every look, the verdict."""
    pairs = [s for s in seeds if s["delta"] is not None]
    last = looks[-1] if looks else None

    def mean(key: str) -> float | None:
        return statistics.fmean(s[key] for s in pairs) if pairs else None

    return {
        "id": claim.id, "preset": claim.preset, "statement": claim.statement,
        "paper": claim.paper, "paper_number": claim.paper_number, "metric": claim.metric,
        "expect": claim.expect, "margin": claim.margin, "budget": claim.budget,
        "arm": {"preset": claim.arm.preset, "point": claim.arm.point, "label": claim.arm.label},
        "baseline": {"preset": claim.baseline.preset, "point": claim.baseline.point,
                     "label": claim.baseline.label},
        "seeds": seeds,
        "looks": [{"seeds_run": k.seeds_run, "pairs": k.n, "mean": k.mean, "low": k.low,
                   "high": k.high, "decision": k.decision} for k in looks],
        "verdict": last.decision if last else "open",
        "seeds_run": len(seeds), "pairs": len(pairs),
        "arm_mean": mean("arm"), "baseline_mean": mean("baseline"),
        "delta_mean": last.mean if last else None,
        "interval": [last.low, last.high] if last and last.low is not None else None,
    }


def run_study(preset: str, root: Path, *, overrides: list[str] = (), budget: int | None = None,
              alpha: float = DEFAULT_ALPHA, train: bool = True,
              announce: Announce = print) -> dict[str, Any]:
    """Run (or with `train=False` only read) `preset`'s claims seed by seed; write and return
    ROOT/preset/study.json."""
    study = Study(preset, root, overrides=overrides, budget=budget, alpha=alpha)
    runtime = None
    seed = 0
    while any(map(study.is_open, study.claims)):
        wanted = study.runs_of_seed(seed)
        missing = []
        for (other, name), (ref, cfg) in wanted.items():
            run_dir = _run_dir(study.root, ref, name)
            finished = (run_dir / "summary.json").is_file() and \
                read_json(run_dir / "summary.json").get("status") in training.FINISHED
            if finished:
                diffs = mismatch(run_dir, cfg)
                if diffs:
                    raise ValueError(f"{run_dir} holds a run of another config "
                                     f"({'; '.join(diffs[:3])}); choose another --root")
            elif train:
                announce(f"{preset}: seed {seed}, training {other}/{name}")
                runtime = runtime or Runtime.start(cfg)
                try:
                    training.run(cfg, run_dir, resume=True, runtime=runtime)
                except training.RunInterrupted:
                    raise training.RunInterrupted(
                        f"interrupted in {run_dir} (its last step saved); run the same "
                        "`normlab study` command to continue") from None
            else:
                missing.append(str(run_dir))
            if train:
                _record_arm(study.root, other, name, cfg)
        if missing:
            announce(f"{preset}: stopped before seed {seed}: no finished run in "
                     f"{', '.join(missing)} (--no-train)")
            break
        study.add_seed(seed)
        seed += 1
    summary = study.summary()
    folder = study.root / folder_name(preset)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
