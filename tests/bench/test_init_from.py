"""`normlab train --init-from HF_DIR`: a run that starts from a transformers folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from normlab import cli
from normlab.bench.init_from import run_model
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig

pytest.importorskip("transformers")
from normlab.hf import export

IDX = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


def _folder(tmp_path, model) -> str:
    torch.manual_seed(1)
    out = tmp_path / "source"
    export(model, out)
    return str(out)


def _train(tmp_path, cache_dir, source: str, *overrides: str, preset="llama-smoke") -> int:
    sets = [item for o in ("train.steps=2", "train.eval_every=2", "train.checkpoint_every=1",
                           "train.diagnose_every=0", f"data.cache_dir={cache_dir}", *overrides)
            for item in ("--set", o)]
    return cli.main(["train", "--preset", preset, "--init-from", source, "--out",
                     str(tmp_path / "run"), "--no-progress", *sets])


def _olmo2() -> Llama:
    torch.manual_seed(2)
    return Llama(LlamaConfig(vocab_size=256, block_size=64, depth=3, dim=32, heads=4,
                             kv_heads=2, placement="olmo2", qk_norm="across_heads"))


def test_the_run_starts_from_the_folders_weights_and_architecture(tmp_path, cache_dir):
    source = _olmo2()
    folder = _folder(tmp_path, source)
    assert _train(tmp_path, cache_dir, folder, "optim.lr=1e-30", "data.seq_len=32") == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["init_from"] == folder
    model = saved["model"]
    assert (model["depth"], model["dim"], model["kv_heads"]) == (3, 32, 2)
    assert saved["placement"]["name"] == "olmo2" and saved["model"]["qk_norm"] == "across_heads"
    trained, step = run_model(tmp_path / "run")
    assert step == 2
    with torch.no_grad():  # lr 1e-30: AdamW leaves every fp32 weight as the folder had it
        assert torch.equal(trained(IDX)[0], source.eval()(IDX)[0])


def test_a_resumed_run_takes_its_weights_from_the_checkpoint(tmp_path, cache_dir):
    folder = _folder(tmp_path, _olmo2())
    assert _train(tmp_path, cache_dir, folder, "train.steps=1", "data.seq_len=32") == 0
    shutil.rmtree(folder)  # not needed any more: the checkpoint holds every weight
    config = tmp_path / "run" / "config.json"
    saved = json.loads(config.read_text())
    saved["train"]["steps"] = 2
    config.write_text(json.dumps(saved))
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0


def test_a_gpt2_folder_sets_the_window_to_its_positions(tmp_path, cache_dir):
    torch.manual_seed(3)
    source = GPT(GPTConfig(vocab_size=256, block_size=48, depth=2, dim=32, heads=2))
    folder = _folder(tmp_path, source)
    assert _train(tmp_path, cache_dir, folder, "optim.lr=1e-30", preset="smoke") == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["kind"] == "gpt" and saved["data"]["seq_len"] == 48
    trained, _ = run_model(tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(trained(IDX)[0], source.eval()(IDX)[0])


@pytest.mark.parametrize(("override", "message"), [
    ("model.depth=5", "model.depth=5 differs from"),
    ("data.seq_len=128", "data.seq_len=128 does not fit"),
])
def test_a_set_that_contradicts_the_folder_is_refused(tmp_path, cache_dir, capsys, override,
                                                      message):
    folder = _folder(tmp_path, _olmo2())
    assert _train(tmp_path, cache_dir, folder, override) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_folder_with_another_vocabulary_is_refused(tmp_path, cache_dir, capsys):
    torch.manual_seed(4)
    folder = _folder(tmp_path, Llama(LlamaConfig(vocab_size=300, block_size=64, depth=1,
                                                 dim=32, heads=2)))
    assert _train(tmp_path, cache_dir, folder) == 2
    assert "vocabulary of 300 tokens" in capsys.readouterr().err


def test_a_folder_that_is_not_a_transformers_folder_is_refused(tmp_path, cache_dir, capsys):
    assert _train(tmp_path, cache_dir, str(tmp_path)) == 2
    assert "no config.json" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path), "--init-from", str(tmp_path)]) == 2
    assert "drop --preset, --set, --init-from" in capsys.readouterr().err


def test_a_run_directory_gives_its_architecture_and_checkpoint(tmp_path, cache_dir):
    source = tmp_path / "pretrained"
    sets = ["--set", f"data.cache_dir={cache_dir}", "--set", "train.steps=2", "--set",
            "train.eval_every=2", "--set", "placement.name=post", "--set", "norm.name=rmsnorm"]
    assert cli.main(["train", "--preset", "smoke", "--out", str(source), "--no-progress",
                     *sets]) == 0
    # another preset's data and schedule; the model, norm and placement come from the run
    assert _train(tmp_path, cache_dir, str(source), "optim.lr=1e-30", preset="llama-smoke") == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["model"]["kind"], saved["model"]["depth"], saved["norm"]["name"],
            saved["placement"]["name"]) == ("gpt", 2, "rmsnorm", "post")
    trained, _ = run_model(tmp_path / "run")
    pretrained, _ = run_model(source)
    with torch.no_grad():
        assert torch.equal(trained(IDX[:, :16])[0], pretrained(IDX[:, :16])[0])
