"""The claims table of docs/reproduction.md, written from the studies' summaries alone.

    text = render(load_summaries(Path("docs/reproduction")))
    update_doc(Path("docs/reproduction.md"), text)

Every ROOT/<preset>/study.json (study/runner.py) gives one row per claim, in the order of the
claim ids (1, 2, 3a, 3b, ..., 10). The table goes between the two marker lines of the page,
which must be there; nothing else of the page changes. The same summaries always give the same
bytes, so the committed table is checked against the committed summaries by the tests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from normlab.bench.metrics import read_json, write_atomic
from normlab.study.runner import SUMMARY

BEGIN = "<!-- begin: table written by `normlab study --table` (do not edit by hand) -->"
END = "<!-- end: table written by `normlab study --table` -->"
HEADER = ("#", "claim (paper)", "paper's number", "Δ = arm − baseline (metric); claimed",
          "mean over the pairs: arm; baseline", "Δ mean [sequential 95 % interval]", "seeds",
          "verdict", "command")


def _order(claim_id: str) -> tuple[int, str]:
    match = re.match(r"(\d+)(.*)", claim_id)
    return (int(match.group(1)), match.group(2)) if match else (10**9, claim_id)


def load_summaries(root: Path) -> list[dict[str, Any]]:
    """Every claim of every ROOT/*/study.json, with its study's settings, ordered by id."""
    claims = []
    for path in sorted(Path(root).glob(f"*/{SUMMARY}")):
        study = read_json(path)
        for claim in study["claims"]:
            claims.append({**claim, "overrides": study["overrides"], "alpha": study["alpha"]})
    ids = [c["id"] for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"claim ids repeat across the summaries under {root}: {sorted(ids)}")
    return sorted(claims, key=lambda c: _order(c["id"]))


def _num(value: float | None, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def _claimed(claim: dict[str, Any]) -> str:
    if claim["expect"] == "matches":
        return f"|Δ| < {claim['margin']:g}"
    return "Δ < 0" if claim["expect"] == "lower" else "Δ > 0"


def _seeds(claim: dict[str, Any]) -> str:
    pairs = claim["pairs"]
    text = (f"{pairs} pair{'' if pairs == 1 else 's'} from {claim['seeds_run']} seeds, "
            f"budget {claim['budget']}")
    lost = []
    for s in claim["seeds"]:
        if s["delta"] is None:
            why = [f"{role} {s[role + '_status']}" for role in ("arm", "baseline")
                   if s[role + "_status"] != "completed"]
            lost.append(f"seed {s['seed']}: {', '.join(why) or 'metric missing'}")
    return text + (f" (lost: {'; '.join(lost)})" if lost else "")


def _verdict(claim: dict[str, Any]) -> str:
    verdict = claim["verdict"]
    if verdict == "open":
        return (f"open: undecided after {claim['seeds_run']} of {claim['budget']} seeds "
                "(the study has not finished)")
    if verdict == "inconclusive":
        return "**inconclusive**: undecided at the seed budget"
    decided_at = claim["looks"][-1]["seeds_run"]
    return f"**{verdict}** (decided after {decided_at} seeds)"


def _command(claim: dict[str, Any]) -> str:
    sets = "".join(f" --set {o}" for o in claim["overrides"])
    return f"`normlab study {claim['preset']}{sets}`"


def row(claim: dict[str, Any]) -> str:
    interval = claim["interval"]
    delta = _num(claim["delta_mean"], "+.4f")
    if interval is not None:
        delta += f" [{interval[0]:+.4f}, {interval[1]:+.4f}]"
    compared = (f"`{claim['arm']['label']}` − `{claim['baseline']['label']}` "
                f"({claim['metric']}); claimed {_claimed(claim)}")
    cells = [claim["id"], f"{claim['statement']} ({claim['paper']})",
             claim["paper_number"] or "—", compared,
             f"{_num(claim['arm_mean'])}; {_num(claim['baseline_mean'])}", delta,
             _seeds(claim), _verdict(claim), _command(claim)]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render(claims: list[dict[str, Any]]) -> str:
    """The markdown table (with its marker lines) of `claims`."""
    lines = [BEGIN, "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [row(c) for c in claims]
    return "\n".join([*lines, END]) + "\n"


def split_doc(text: str, where: Path) -> tuple[str, str, str]:
    """(before, the generated block with its markers, after) of a page's text."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{where} has no table markers; add the lines\n{BEGIN}\n{END}\n"
                         "where the table goes")
    stop = end + len(END) + 1  # the marker line's newline
    return text[:start], text[start:stop], text[stop:]


def update_doc(doc: Path, table: str) -> bool:
    """Put `table` between the markers of `doc`; True when the page changed."""
    doc = Path(doc)
    text = doc.read_text()
    before, old, after = split_doc(text, doc)
    if old == table:
        return False
    write_atomic(doc, before + table + after)
    return True
