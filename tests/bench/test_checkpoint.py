"""Checkpoints: exact round trip, no unpickling, refusal of tampered or mismatched files."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from normlab.bench import checkpoint
from normlab.bench.config import RunConfig


class Tied(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.embed = nn.Embedding(16, dim)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, 16, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, x):
        return self.lm_head(self.norm(self.embed(x)))


CONFIG = {"model": {"dim": 8}, "train": {"seed": 0}}


def trained(seed=0):
    torch.manual_seed(seed)
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(3):
        model(torch.randint(0, 16, (2, 5))).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def save(tmp_path, model, opt, step=3, keep=2):
    return checkpoint.save(tmp_path, step, model=model.state_dict(), optimizer=opt.state_dict(),
                           tensors={"rng.cpu.0": torch.get_rng_state()},
                           loop={"running_min": 1.5}, config=CONFIG, keep=keep)


def test_round_trip_is_exact_and_never_unpickles(tmp_path, monkeypatch):
    model, opt = trained()
    rng = torch.get_rng_state()
    path = save(tmp_path, model, opt)

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    fresh, fresh_opt = trained(seed=1)
    ckpt = checkpoint.load(path, config=CONFIG, expected=fresh.state_dict())
    fresh.load_state_dict(ckpt.model)
    fresh_opt.load_state_dict(ckpt.optimizer)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert a.equal(b), name
    assert fresh.lm_head.weight is fresh.embed.weight  # tying survives
    want, got = opt.state_dict(), fresh_opt.state_dict()
    assert want["param_groups"] == got["param_groups"]
    for pid, entries in want["state"].items():
        for key, value in entries.items():
            assert got["state"][pid][key].equal(value) and got["state"][pid][key].dtype == \
                value.dtype
    assert ckpt.step == 3 and ckpt.loop == {"running_min": 1.5}
    assert ckpt.tensors["rng.cpu.0"].equal(rng)


def test_tampered_tensor_file_is_refused(tmp_path):
    model, opt = trained()
    path = save(tmp_path, model, opt)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        checkpoint.load(path, config=CONFIG, expected=model.state_dict())


def test_missing_file_and_broken_manifest_are_refused(tmp_path):
    model, opt = trained()
    path = save(tmp_path, model, opt)
    (path / "optim.safetensors").unlink()
    with pytest.raises(ValueError, match=r"optim\.safetensors"):
        checkpoint.load(path, config=CONFIG, expected=model.state_dict())
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable"):
        checkpoint.load(path, config=CONFIG, expected=model.state_dict())


def test_other_config_is_refused_naming_the_field(tmp_path):
    model, opt = trained()
    path = save(tmp_path, model, opt)
    other = json.loads(json.dumps(CONFIG))
    other["train"]["seed"] = 1
    with pytest.raises(ValueError, match=r"train\.seed"):
        checkpoint.load(path, config=other, expected=model.state_dict())


def test_other_model_shape_is_refused_naming_the_tensor(tmp_path):
    model, opt = trained()
    path = save(tmp_path, model, opt)
    with pytest.raises(ValueError, match=r"embed\.weight.*\[16, 8\].*\[16, 4\]"):
        checkpoint.load(path, config=CONFIG, expected=Tied(dim=4).state_dict())
    extra = dict(model.state_dict(), extra=torch.zeros(1))
    with pytest.raises(ValueError, match="missing"):
        checkpoint.load(path, config=CONFIG, expected=extra)


def test_latest_pointer_pruning_and_leftover_temp(tmp_path):
    model, opt = trained()
    for step in (2, 4, 6):
        save(tmp_path, model, opt, step=step, keep=2)
    (tmp_path / "checkpoints" / ".tmp-step_0000008-123").mkdir()  # a write that was killed
    folders = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert folders == ["step_0000004", "step_0000006"]
    assert checkpoint.latest(tmp_path).name == "step_0000006"
    assert checkpoint.latest(tmp_path / "nothing") is None


def test_pruning_never_removes_the_newest_and_drops_a_replaced_history(tmp_path):
    model, opt = trained()
    for step in (2, 4, 6):
        save(tmp_path, model, opt, step=step, keep=3)
    save(tmp_path, model, opt, step=3, keep=3)  # a history that went on from step 2 again
    folders = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert folders == ["step_0000002", "step_0000003"]
    assert checkpoint.latest(tmp_path).name == "step_0000003"


def test_optimizer_structure_round_trip_keeps_tuples():
    _, opt = trained()
    tensors, structure = checkpoint.flatten_optimizer(opt.state_dict())
    json.dumps(structure)  # the structure is plain JSON
    back = checkpoint.unflatten_optimizer(tensors, json.loads(json.dumps(structure)))
    assert back["param_groups"][0]["betas"] == (0.9, 0.95)
    assert set(back["state"]) == set(opt.state_dict()["state"])


def test_field_added_after_the_checkpoint_counts_as_its_default(tmp_path):
    # a checkpoint written before train.diagnose_every and optim.gate_clip existed
    current = RunConfig().to_dict()
    old = json.loads(json.dumps(current))
    del old["train"]["diagnose_every"], old["optim"]["gate_clip"]
    model, opt = trained()
    path = checkpoint.save(tmp_path, 3, model=model.state_dict(), optimizer=opt.state_dict(),
                           tensors={}, loop={}, config=old)
    assert checkpoint.load(path, config=current, expected=model.state_dict()).step == 3
    changed = json.loads(json.dumps(current))
    changed["train"]["diagnose_every"] = 5  # the old run recorded nothing: a real difference
    with pytest.raises(ValueError, match=r"train\.diagnose_every: 0 != 5"):
        checkpoint.load(path, config=changed, expected=model.state_dict())
    with_kwarg = json.loads(json.dumps(current))
    with_kwarg["norm"]["kwargs"] = {"eps": 1e-6}  # a kwargs key has no default to fall back on
    with pytest.raises(ValueError, match=r"norm\.kwargs\.eps: None != 1e-06"):
        checkpoint.load(path, config=with_kwarg, expected=model.state_dict())
