"""Faults a user can cause or meet: each ends with the data intact and a one-line message.

kill -9 and Ctrl-C mid-run (resume bit-identical), a disk that fills mid-checkpoint, unwritable
outputs, corrupted config and metrics files, output folders reused with another config.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlab import cli
from normlab.bench import checkpoint, train
from normlab.bench.metrics import read_metrics

TINY = ["--set", "placement.name=pre", "--set", "norm.name=layernorm", "--set", "train.steps=6",
        "--set", "train.checkpoint_every=2", "--set", "train.eval_every=3",
        "--set", "train.diagnose_every=0", "--no-progress"]
DETERMINISTIC = ("kind", "step", "loss", "lr", "grad_norm", "val_loss")


def tiny(cache_dir: str) -> list[str]:
    return [*TINY, "--set", f"data.cache_dir={cache_dir}"]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` and the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def comparable(run_dir: Path) -> list[dict]:
    return [{k: r[k] for k in DETERMINISTIC if k in r}
            for r in read_metrics(run_dir / "metrics.jsonl")]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def straight(tmp_path_factory, cache_dir):
    """An uninterrupted tiny run to compare resumed ones with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert cli.main(["train", "--preset", "smoke", "--out", str(out), *tiny(cache_dir)]) == 0
    return out


def train_killed_at(out: Path, cache_dir: str, step: int, sig: signal.Signals):
    """`normlab train` in a child process that sends itself `sig` after step `step`."""
    script = (
        "import os, signal, sys\n"
        "from normlab.bench import commands\n"
        "real = commands.training.run\n"
        "def run(*a, on_step=None, **k):\n"
        f"    def kill(step, record):\n        if step == {step}:\n"
        f"            os.kill(os.getpid(), signal.{sig.name})\n"
        "    return real(*a, on_step=kill, **k)\n"
        "commands.training.run = run\n"
        "from normlab import cli\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    return subprocess.run([sys.executable, "-c", script, "train", "--preset", "smoke",
                           "--out", str(out), *tiny(cache_dir)], capture_output=True, text=True)


def test_kill_9_at_a_random_step_resumes_bit_identical(tmp_path, cache_dir, straight):
    kill_at = random.Random(0).randint(3, 5)  # after the first checkpoint, before the end
    out = tmp_path / "killed"
    done = train_killed_at(out, cache_dir, kill_at, signal.SIGKILL)
    assert done.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert comparable(out) == comparable(straight)
    assert tree_digest(checkpoint.latest(out)) == tree_digest(checkpoint.latest(straight))


def test_sigterm_saves_the_step_and_says_how_to_resume(tmp_path, cache_dir, straight):
    out = tmp_path / "stopped"
    done = train_killed_at(out, cache_dir, 3, signal.SIGTERM)
    assert done.returncode == 130
    message = done.stderr.strip()
    assert "\n" not in message and "saved step 3" in message, done.stderr
    assert checkpoint.latest(out).name == "step_0000003"
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert comparable(out) == comparable(straight)


def test_ctrl_c_saves_the_last_step_and_resumes_bit_identical(tmp_path, cache_dir, straight,
                                                              monkeypatch, capsys):
    real_step, calls = train.train_step, []

    def interrupted_at_step_4(s, state):
        calls.append(state.step)
        if state.step == 3 and len(calls) == 4:  # mid-way through the 4th step: its batch
            s.data.train_batch(s.generator)    # drawn, the RNG used, no update yet
            torch.rand(3)
            raise KeyboardInterrupt
        return real_step(s, state)

    monkeypatch.setattr(train, "train_step", interrupted_at_step_4)
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", "--out", str(out), *tiny(cache_dir)]) == 130
    message = one_line_error(capsys)
    assert "saved step 3" in message and f"normlab train --resume {out}" in message
    assert checkpoint.latest(out).name == "step_0000003"
    monkeypatch.setattr(train, "train_step", real_step)
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert comparable(out) == comparable(straight)


def test_full_disk_mid_checkpoint_leaves_the_last_one_and_resumes(tmp_path, cache_dir,
                                                                   straight, monkeypatch,
                                                                   capsys):
    real_save, calls = checkpoint.save_file, []

    def fills_up(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:  # the second file of the second checkpoint
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", fills_up)
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", "--out", str(out), *tiny(cache_dir)]) == 1
    assert "No space left on device" in one_line_error(capsys)
    folder = out / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step_0000002"]
    assert checkpoint.latest(out).name == "step_0000002"
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert comparable(out) == comparable(straight)


def test_unwritable_output_is_one_line(tmp_path, cache_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    for command in (["train", "--preset", "smoke"], ["bench", "--preset", "smoke"]):
        assert cli.main([*command, "--out", str(blocker / "x"), *tiny(cache_dir)]) == 2
        assert "Not a directory" in one_line_error(capsys)
    assert cli.main(["train", "--preset", "smoke", "--out", str(blocker), *tiny(cache_dir)]) == 2
    assert "is a file" in one_line_error(capsys)
    assert blocker.read_text() == "mine"


def test_corrupted_config_and_metrics_are_named(tmp_path, straight, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "summary.json", "run.json"):
        (run / name).write_bytes((straight / name).read_bytes())
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([*lines[:2], "{oops", *lines[2:]]) + "\n")
    assert cli.main(["report", str(run)]) == 2
    assert f"{run / 'metrics.jsonl'}, line 3" in one_line_error(capsys)
    # a last line cut short (a kill mid-append) is dropped, not an error
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"kind": "tr')
    assert len(read_metrics(run / "metrics.jsonl")) == len(lines)
    (run / "config.json").write_text('{\n  "model": {,\n}')
    before = tree_digest(run)
    assert cli.main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert f"{run / 'config.json'}, line 2" in one_line_error(capsys)
    assert tree_digest(run) == before


def test_malformed_preset_names_file_and_line(tmp_path, capsys):
    preset = tmp_path / "mine.yaml"
    preset.write_text("model: {kind: gpt\n  depth: [\n")
    assert cli.main(["bench", "--preset", str(preset)]) == 2
    assert f"{preset}, line 2" in one_line_error(capsys)


def test_train_refuses_an_existing_run_unless_resume_or_overwrite(tmp_path, cache_dir,
                                                                  straight, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for p in straight.rglob("*"):
        target = run / p.relative_to(straight)
        target.mkdir(exist_ok=True) if p.is_dir() else target.write_bytes(p.read_bytes())
    before = tree_digest(run)
    assert cli.main(["train", "--preset", "smoke", "--out", str(run), *tiny(cache_dir)]) == 2
    assert "--resume" in one_line_error(capsys) and tree_digest(run) == before
    assert cli.main(["train", "--preset", "smoke", "--out", str(run), *tiny(cache_dir),
                     "--set", "optim.lr=3e-2", "--overwrite"]) == 0
    assert json.loads((run / "config.json").read_text())["optim"]["lr"] == 3e-2
    latest = checkpoint.latest(run)
    assert latest is not None and latest.name == "step_0000006"
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == \
        ["step_0000004", "step_0000006"]


def test_overwrite_never_removes_a_folder_normlab_did_not_write(tmp_path, cache_dir, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for command in ("train", "bench"):
        assert cli.main([command, "--preset", "smoke", "--out", str(mine), *tiny(cache_dir),
                         "--overwrite"]) == 2
        assert "holds no normlab run" in one_line_error(capsys)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_bench_refuses_a_folder_of_another_sweep(tmp_path, cache_dir, capsys):
    out = tmp_path / "s1"
    first = ["bench", "--preset", "smoke", "--out", str(out), "--timing-rounds", "0",
             *tiny(cache_dir)]
    assert cli.main(first) == 0
    capsys.readouterr()
    before = tree_digest(out)
    # the same arms with another learning rate and width: refused, naming the fields
    assert cli.main([*first, "--set", "optim.lr=3e-2", "--set", "model.dim=64"]) == 2
    message = one_line_error(capsys)
    assert "optim.lr" in message and "model.dim" in message
    # other arms (another preset's names): refused, naming an arm that does not belong
    assert cli.main([*first, "--set", "norm.name=[rmsnorm]"]) == 2
    assert "not part of this sweep" in one_line_error(capsys)
    assert tree_digest(out) == before
    # the same sweep again: every arm reused, nothing retrained
    assert cli.main(first) == 0
    assert tree_digest(out / "arms") == {k.removeprefix("arms/"): v for k, v in before.items()
                                         if k.startswith("arms/")}
    # a sweep folder is not a run folder, and the other way round
    assert cli.main(["train", "--preset", "smoke", "--out", str(out), *tiny(cache_dir)]) == 2
    assert "holds a sweep" in one_line_error(capsys)
    arm = next((out / "arms").iterdir())
    assert cli.main([*first[:3], "--out", str(arm), *first[5:]]) == 2
    assert "holds a single run" in one_line_error(capsys)
    # with --overwrite the new sweep starts afresh
    assert cli.main([*first, "--set", "optim.lr=3e-2", "--overwrite"]) == 0
    sweep = json.loads((out / "sweep.json").read_text())["arms"]
    assert [a["config"]["optim"]["lr"] for a in sweep.values()] == [3e-2]


def test_exit_codes_diverged_train_is_1_bench_crash_is_1(tmp_path, cache_dir, monkeypatch,
                                                         capsys):
    args = ["--preset", "smoke", *tiny(cache_dir), "--set", "optim.lr=1e4",
            "--set", "optim.grad_clip=0"]
    assert cli.main(["train", *args, "--out", str(tmp_path / "t")]) == 1
    assert cli.main(["bench", *args, "--out", str(tmp_path / "b"), "--timing-rounds", "0"]) == 0
    real = train.build_model

    def crash(cfg):
        raise RuntimeError("boom")

    monkeypatch.setattr(train, "build_model", crash)
    assert cli.main(["bench", "--preset", "smoke", *tiny(cache_dir), "--timing-rounds", "0",
                     "--out", str(tmp_path / "c")]) == 1
    monkeypatch.setattr(train, "build_model", real)
    capsys.readouterr()


def test_debug_shows_the_traceback_and_other_ranks_stay_quiet(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["train", "--preset", "nosuchpreset"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("NORMLAB_DEBUG", "1")
    with pytest.raises(ValueError, match="nosuchpreset"):
        cli.main(["train", "--preset", "nosuchpreset"])
