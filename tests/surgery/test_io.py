"""save_converted / load_converted and the `normlab convert` subcommand: the round trip."""

from __future__ import annotations

import argparse
import copy
import json

import pytest
import torch
from surgery_models import bert, gpt2, llama, outputs, rel_err, token_ids, vit

from normlab.norms.rms import CRMSNorm
from normlab.surgery import (
    fold_norms,
    load_converted,
    save_converted,
    swap_norms,
    to_crmsnorm,
    to_rmsnorm,
)
from normlab.surgery.command import add_parser

TOL = 1e-5


@pytest.mark.parametrize("op", [to_rmsnorm, to_crmsnorm, fold_norms])
def test_gpt2_round_trip(tmp_path, op):
    model = gpt2(tied=True)
    source = copy.deepcopy(model)
    model, report = op(model)
    save_converted(model, tmp_path, report)
    loaded = load_converted(tmp_path)
    ids = token_ids()
    torch.testing.assert_close(outputs(loaded, input_ids=ids), outputs(model, input_ids=ids))
    assert rel_err(outputs(loaded, input_ids=ids), outputs(source, input_ids=ids)) < TOL
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))  # no pickles
    manifest = json.loads((tmp_path / "normlab_surgery.json").read_text())
    assert manifest["architecture"] == "GPT2LMHeadModel"


def test_round_trip_of_llama_fold_and_vit_crmsnorm(tmp_path):
    for i, (model, op, key) in enumerate(
        [(llama(tied=True), fold_norms, "input_ids"), (vit(), to_crmsnorm, "pixel_values")]
    ):
        model, report = op(model)
        save_converted(model, tmp_path / str(i), report)
        loaded = load_converted(tmp_path / str(i))
        x = token_ids() if key == "input_ids" else torch.randn(2, 3, 16, 16)
        torch.testing.assert_close(outputs(loaded, **{key: x}), outputs(model, **{key: x}))


def test_round_trip_after_two_operations(tmp_path):
    model = bert()
    model, swap = swap_norms(model, "dyt", approximate=True)
    model, swap2 = swap_norms(model, "layernorm", "*.output.LayerNorm", approximate=True)
    save_converted(model, tmp_path, swap, swap2)
    loaded = load_converted(tmp_path)
    ids = token_ids()
    torch.testing.assert_close(outputs(loaded, input_ids=ids), outputs(model, input_ids=ids))


def test_save_refusals(tmp_path):
    model, _report = to_rmsnorm(gpt2())
    with pytest.raises(ValueError, match="pass the Report"):
        save_converted(model, tmp_path)
    with pytest.raises(ValueError, match="not a normlab surgery output"):
        load_converted(tmp_path)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="normlab")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_convert(tmp_path, capsys):
    source = gpt2(tied=True)
    source.save_pretrained(tmp_path / "src")
    src, out = str(tmp_path / "src"), str(tmp_path / "o")
    code = _cli(["convert", src, "--to", "crmsnorm", "--out", out])
    assert code == 0
    printed = capsys.readouterr().out
    assert "to_crmsnorm on gpt2 (GPT2LMHeadModel)" in printed and "max rel error" in printed
    loaded = load_converted(tmp_path / "o")
    assert isinstance(loaded.transformer.h[0].ln_1, CRMSNorm)
    ids = token_ids()
    assert rel_err(outputs(loaded, input_ids=ids), outputs(source, input_ids=ids)) < TOL


def test_cli_refusal_exits_2(tmp_path, capsys):
    bert().save_pretrained(tmp_path / "src")
    code = _cli(["convert", str(tmp_path / "src"), "--to", "rmsnorm", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "Post-LN" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_importing_surgery_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, normlab.surgery.command; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
