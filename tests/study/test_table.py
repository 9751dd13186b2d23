"""The table of docs/reproduction.md is written from the committed summaries alone."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from normlab.study.runner import SUMMARY, run_study
from normlab.study.table import BEGIN, END, load_summaries, render, split_doc, update_doc

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "reproduction"
PAGE = REPO / "docs" / "reproduction.md"


def test_the_committed_table_is_regenerated_byte_for_byte():
    claims = load_summaries(DOCS)
    assert claims, "no committed summaries under docs/reproduction/*/study.json"
    _, block, _ = split_doc(PAGE.read_text(), PAGE)
    assert render(claims) == block


def test_every_row_states_its_seeds_budget_and_interval_or_why_not():
    for claim in load_summaries(DOCS):
        line = render([claim]).splitlines()[3]
        assert f"budget {claim['budget']}" in line and f"from {claim['seeds_run']} seeds" in line
        if claim["verdict"] in ("reproduced", "not reproduced"):
            low, high = claim["interval"]
            assert f"[{low:+.4f}, {high:+.4f}]" in line


CLAIM = {
    "id": "3a", "preset": "claim-3", "statement": "LNS beats Pre-LN", "paper": "Sun et al.",
    "paper_number": "17.02 → 15.71", "metric": "final_val_loss", "expect": "lower",
    "margin": None, "budget": 8,
    "arm": {"label": "claim-3:lns"}, "baseline": {"label": "claim-3:pre"},
    "seeds": [{"seed": 0, "arm": 2.0, "baseline": 2.5, "arm_status": "completed",
               "baseline_status": "completed", "delta": -0.5},
              {"seed": 1, "arm": None, "baseline": 2.4, "arm_status": "diverged",
               "baseline_status": "completed", "delta": None},
              {"seed": 2, "arm": 2.1, "baseline": 2.5, "arm_status": "completed",
               "baseline_status": "completed", "delta": -0.4}],
    "looks": [{"seeds_run": 3}], "verdict": "reproduced", "seeds_run": 3, "pairs": 2,
    "arm_mean": 2.05, "baseline_mean": 2.5, "delta_mean": -0.45, "interval": [-0.61, -0.29],
}


def _write(root: Path, name: str, claims: list[dict]) -> None:
    (root / name).mkdir(parents=True)
    (root / name / SUMMARY).write_text(json.dumps(
        {"preset": name, "overrides": [], "alpha": 0.05, "claims": claims}))


def test_a_row_from_a_summary(tmp_path):
    other = {**copy.deepcopy(CLAIM), "id": "10", "verdict": "open", "interval": None,
             "delta_mean": None, "arm_mean": None, "baseline_mean": None, "seeds": [],
             "seeds_run": 0, "pairs": 0, "looks": []}
    _write(tmp_path, "claim-3", [other, CLAIM])
    lines = render(load_summaries(tmp_path)).splitlines()
    assert lines[0] == BEGIN and lines[-1] == END and len(lines) == 6
    assert lines[3] == (
        "| 3a | LNS beats Pre-LN (Sun et al.) | 17.02 → 15.71 | `claim-3:lns` − `claim-3:pre` "
        "(final_val_loss); claimed Δ < 0 | 2.0500; 2.5000 | -0.4500 [-0.6100, -0.2900] | "
        "2 pairs from 3 seeds, budget 8 (lost: seed 1: arm diverged) | **reproduced** "
        "(decided after 3 seeds) | `normlab study claim-3` |")
    assert lines[4].startswith("| 10 |") and "open: undecided after 0 of 8 seeds" in lines[4]


def test_repeated_ids_are_refused(tmp_path):
    _write(tmp_path, "a", [CLAIM])
    _write(tmp_path, "b", [CLAIM])
    with pytest.raises(ValueError, match="claim ids repeat"):
        load_summaries(tmp_path)


def test_update_doc_replaces_only_the_block(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(f"top\n{BEGIN}\nold\n{END}\nbottom\n")
    table = f"{BEGIN}\nnew\n{END}\n"
    assert update_doc(doc, table)
    assert doc.read_text() == f"top\n{table}bottom\n"
    assert not update_doc(doc, table)
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="has no table markers"):
        update_doc(doc, table)


@pytest.mark.parametrize("preset, folders", [
    ("claim-8", ["claim-8"]), ("claim-7-powernorm", ["claim-7-powernorm", "claim-7"])])
def test_the_committed_summaries_come_from_the_committed_runs(tmp_path, preset, folders):
    for folder in folders:
        shutil.copytree(DOCS / folder / "arms", tmp_path / folder / "arms")
    summary = run_study(preset, tmp_path, train=False, announce=lambda _: None)
    assert (tmp_path / preset / SUMMARY).read_text() == (DOCS / preset / SUMMARY).read_text()
    assert summary == json.loads((DOCS / preset / SUMMARY).read_text())
