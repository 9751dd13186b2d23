"""The docs stay true to the code: every registered norm is documented with its real facts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from normlab import get_norm_class, list_norms

DOCS = Path(__file__).resolve().parents[1] / "docs"


def norms_table() -> dict[str, list[str]]:
    rows = {}
    for line in (DOCS / "norms.md").read_text().splitlines():
        match = re.match(r"\| `([a-z0-9_]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


@pytest.mark.parametrize("name", list_norms())
def test_every_norm_is_documented_with_its_facts(name):
    rows = norms_table()
    assert name in rows, f"docs/norms.md has no row for {name!r}"
    _formula, stats, fold, _paper = rows[name]
    info = get_norm_class(name).info
    assert (stats, fold) == (info.stats, info.fold), f"docs/norms.md disagrees on {name!r}"


def test_docs_list_no_unregistered_norm():
    assert set(norms_table()) <= set(list_norms())
