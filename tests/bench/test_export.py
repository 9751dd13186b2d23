"""`normlab export`: a trained run's last checkpoint as a native transformers folder."""

from __future__ import annotations

import pytest
import torch

from normlab import cli
from normlab.bench.init_from import run_model

transformers = pytest.importorskip("transformers")


def train(out, cache_dir, *overrides: str) -> None:
    sets = [item for o in ("train.steps=6", "train.checkpoint_every=3", "train.eval_every=3",
                           "train.diagnose_every=0", f"data.cache_dir={cache_dir}", *overrides)
            for item in ("--set", o)]
    assert cli.main(["train", "--preset", "llama-smoke", "--out", str(out), "--no-progress",
                     *sets]) == 0


def test_export_a_trained_llama_run(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    train(run, cache_dir, "placement.name=pre", "norm.name=rmsnorm")
    out = tmp_path / "hf"
    assert cli.main(["export", str(run), "--out", str(out)]) == 0
    assert "exported step 6" in capsys.readouterr().out
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "Qwen3ForCausalLM"  # llama-smoke has QK-norm per head
    model, step = run_model(run)
    assert step == 6
    idx = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(idx)[0], hf(idx).logits
    assert (ours - theirs).abs().max() <= 1e-5 * ours.abs().max()


def test_a_refused_export_writes_nothing(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    train(run, cache_dir, "placement.name=olmo2", "norm.name=rmsnorm")
    out = tmp_path / "hf"
    assert cli.main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "placement 'olmo2'" in err and "no native equivalent" in err
    assert not out.exists()
    assert cli.main(["export", str(tmp_path / "nothing"), "--out", str(out)]) == 2
