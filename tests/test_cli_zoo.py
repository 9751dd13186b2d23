"""`normlab zoo`: the table of every registered norm."""

from __future__ import annotations

from normlab import list_norms
from normlab.cli import main


def test_zoo_lists_every_norm_with_its_facts(capsys):
    assert main(["zoo", "--width", "400"]) == 0
    out = capsys.readouterr().out
    assert f"{len(list_norms())} normalizations" in out
    lines = out.splitlines()
    for name in list_norms():
        row = next((line for line in lines if line.startswith(f"│ {name} ")), None)
        assert row is not None, f"no row for {name}"
    rms_row = next(line for line in lines if line.startswith("│ rmsnorm "))
    assert "token" in rms_row and "affine" in rms_row and "Zhang" in rms_row
