"""The `claims:` sections of the presets: every packaged claim resolves to the preset's own runs,
and a malformed definition is refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from normlab.bench.presets import expand, load_preset
from normlab.study.claims import ArmRef, arm_run, claim_presets, load_claims

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reproduction"


def test_every_claim_parses_and_names_the_committed_runs():
    presets = claim_presets()
    assert {"claim-1", "claim-3", "claim-5", "claim-7-powernorm", "claim-8"} <= set(presets)
    claims = [c for p in presets for c in load_claims(p)]
    assert len({c.id for c in claims}) == len(claims)
    for claim in claims:
        for ref in claim.runs:
            name, _ = arm_run(ref, 0)
            assert (DOCS / ref.preset / "arms" / name / "config.json").is_file(), name
    assert load_claims("quick") == []


@pytest.mark.parametrize("preset", ["claim-6-lm-alpha", "claim-7-powernorm"])
def test_an_arm_is_the_presets_own_run_of_that_seed(preset):
    for claim in load_claims(preset):
        for ref in claim.runs:
            name, cfg = arm_run(ref, 5)
            cfg_sweep = load_preset(ref.preset)
            arms = dict(expand(cfg_sweep[0], {**cfg_sweep[1], "train.seed": [5]}))
            assert arms[name].to_dict() == cfg.to_dict()
            assert cfg.train.seed == 5


def _preset(tmp_path: Path, claim: dict, sweep=None) -> str:
    data = {"model": {"kind": "gpt", "depth": 1, "dim": 16, "heads": 2},
            "data": {"source": "stdlib", "seq_len": 16, "batch_size": 2},
            "sweep": sweep or {"norm.name": ["layernorm", "rmsnorm"], "train.seed": [0]},
            "claims": [claim]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return str(path)


GOOD = {"id": "x", "statement": "s", "paper": "p", "arm": {"norm.name": "rmsnorm"},
        "baseline": {"norm.name": "layernorm"}, "expect": "lower"}


def test_a_good_claim_from_a_file(tmp_path):
    (claim,) = load_claims(_preset(tmp_path, GOOD))
    assert (claim.budget, claim.metric, claim.margin) == (8, "final_val_loss", None)
    assert arm_run(claim.arm, 3)[0] == "rmsnorm-s3"


@pytest.mark.parametrize("change, match", [
    ({"colour": 1}, "unknown colour"),
    ({"id": None}, "id: expected a string"),
    ({"expect": "matches"}, "needs a positive margin"),
    ({"margin": 0.1}, "belongs to a 'matches' claim"),
    ({"metric": "accuracy"}, "metric: expected one of"),
    ({"budget": 1}, "budget must be an integer >= 2"),
    ({"arm": {"norm.name": "dyt"}}, "not among the values"),
    ({"arm": {"placement.name": "post"}}, "not a sweep axis"),
    ({"arm": {"norm.name": "rmsnorm", "train.seed": 0}}, "chosen by the study"),
    ({"arm": "rmsnorm"}, "expected a mapping of sweep-axis values"),
    ({"baseline": {"norm.name": "rmsnorm"}}, "are the same run"),
    ({"baseline": {"preset": "no-such-preset", "norm.name": "layernorm"}}, "unknown preset"),
])
def test_a_bad_claim_is_refused(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        load_claims(_preset(tmp_path, {**GOOD, **change}))


def test_a_missing_field_is_named(tmp_path):
    claim = {k: v for k, v in GOOD.items() if k != "expect"}
    with pytest.raises(ValueError, match="missing expect"):
        load_claims(_preset(tmp_path, claim))


def test_an_unpinned_axis_is_refused(tmp_path):
    sweep = {"norm.name": ["layernorm", "rmsnorm"], "optim.lr": [1e-3, 3e-3]}
    with pytest.raises(ValueError, match=r"does not pin the sweep axis optim\.lr"):
        load_claims(_preset(tmp_path, GOOD, sweep))


def test_arm_labels():
    assert ArmRef("claim-7", {"norm.name": "layernorm"}).label == "claim-7:layernorm"
