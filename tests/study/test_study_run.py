"""`normlab study` end to end on a tiny preset: seed by seed, paired, resumable, summarized."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from normlab import cli
from normlab.bench.metrics import read_json
from normlab.study.runner import SUMMARY, run_study
from normlab.study.sequential import sequence
from normlab.study.table import BEGIN, END


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("preset")
    data = {
        "model": {"kind": "gpt", "depth": 1, "dim": 16, "heads": 2},
        "data": {"source": "stdlib", "seq_len": 16, "batch_size": 2,
                 "cache_dir": str(folder / "cache")},
        "schedule": {"warmup_steps": 1},
        "train": {"steps": 3, "eval_every": 3, "eval_batches": 1, "checkpoint_every": 3},
        "device": "cpu",
        "sweep": {"norm.name": ["layernorm", "rmsnorm"], "train.seed": [0]},
        "claims": [{"id": "9z", "statement": "RMSNorm beats LayerNorm", "paper": "nobody",
                    "arm": {"norm.name": "rmsnorm"}, "baseline": {"norm.name": "layernorm"},
                    "expect": "lower"}],
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _check(summary: dict, root: Path, preset: str) -> None:
    (claim,) = summary["claims"]
    for i, seed in enumerate(claim["seeds"]):
        assert seed["seed"] == i
        values = {}
        for role, norm in (("arm", "rmsnorm"), ("baseline", "layernorm")):
            saved = read_json(root / preset / "arms" / f"{norm}-s{i}" / "summary.json")
            assert saved["seed"] == i and saved["norm"] == norm
            values[role] = saved["final_val_loss"]
            assert seed[role] == values[role]
        assert seed["delta"] == values["arm"] - values["baseline"]
    looks = sequence([s["delta"] for s in claim["seeds"]], expect="lower",
                     budget=claim["budget"])
    assert [k["decision"] for k in claim["looks"]] == [k.decision for k in looks]
    assert claim["verdict"] == looks[-1].decision
    assert claim["seeds_run"] == len(looks) <= claim["budget"]
    assert read_json(root / preset / SUMMARY) == summary


def test_a_study_runs_seed_by_seed_and_continues_where_it_stopped(tmp_path, preset):
    said: list[str] = []
    first = run_study(preset, tmp_path, budget=2, announce=said.append)
    preset_name = Path(preset).stem
    folder = tmp_path / preset_name
    _check(first, tmp_path, preset_name)
    ran = first["claims"][0]["seeds_run"]
    assert sum("training" in s for s in said) == 2 * ran
    assert sorted(read_json(folder / "sweep.json")["arms"]) == sorted(
        f"{n}-s{k}" for n in ("layernorm", "rmsnorm") for k in range(ran))
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("arms/*/summary.json")}

    said.clear()
    second = run_study(preset, tmp_path, budget=3, announce=said.append)
    _check(second, tmp_path, preset_name)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing re-run
    new = second["claims"][0]["seeds_run"] - ran
    assert sum("training" in s for s in said) == 2 * new
    assert second["claims"][0]["seeds"][:ran] == first["claims"][0]["seeds"]

    said.clear()
    again = run_study(preset, tmp_path, budget=3, announce=said.append, train=False)
    assert again == second and not said


def test_no_train_summarizes_what_is_on_disk(tmp_path, preset):
    said: list[str] = []
    summary = run_study(preset, tmp_path, announce=said.append, train=False)
    (claim,) = summary["claims"]
    assert (claim["verdict"], claim["seeds_run"], claim["interval"]) == ("open", 0, None)
    assert "stopped before seed 0" in said[0]


def test_a_run_of_another_config_is_refused(tmp_path, preset):
    run_study(preset, tmp_path, budget=2, announce=lambda _: None)
    with pytest.raises(ValueError, match="holds a run of another config"):
        run_study(preset, tmp_path, budget=2, overrides=["optim.lr=1e-2"],
                  announce=lambda _: None)
    with pytest.raises(ValueError, match="the study chooses the seeds"):
        run_study(preset, tmp_path, overrides=["train.seed=3"])


def test_the_command_runs_then_writes_the_table(tmp_path, preset, capsys):
    doc = tmp_path / "page.md"
    doc.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    root = tmp_path / "root"
    status = cli.main(["study", preset, "--root", str(root), "--budget", "2", "--table",
                       "--doc", str(doc)])
    assert status == 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + BEGIN) and text.endswith(END + "\n\nafter\n")
    assert "| 9z | RMSNorm beats LayerNorm (nobody) |" in text and "old" not in text
    summary = json.loads((root / Path(preset).stem / SUMMARY).read_text())
    assert summary["claims"][0]["id"] == "9z"
    assert "9z" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["study"], "give claim presets"),
    (["study", "claim-3", "--all"], "not both"),
    (["study", "quick", "--no-train"], "has no claims: section"),
])
def test_bad_command_lines(argv, message, capsys, tmp_path):
    assert cli.main([*argv, "--root", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_an_interrupted_study_says_how_to_continue(tmp_path, preset, monkeypatch):
    from normlab.bench import train

    def stop(*args, **kwargs):
        raise train.RunInterrupted("interrupted")

    monkeypatch.setattr(train, "run", stop)
    with pytest.raises(train.RunInterrupted, match="run the same `normlab study` command"):
        run_study(preset, tmp_path, announce=lambda _: None)
    assert not (tmp_path / "tiny" / SUMMARY).exists()
