"""What surgery writes cannot be mistaken: native folds load in plain `from_pretrained` with the
same outputs; anything else is refused there and loads only through `load_converted`; the
command line and the diagnostics read the manifest; `convert` never writes into its source."""

from __future__ import annotations

import argparse
import copy
import json

import pytest
import torch

from normlab.surgery import fold_norms, load_converted, save_converted, swap_norms, to_rmsnorm
from normlab.surgery.adapters.traced import TRACED, model_output
from normlab.surgery.command import add_parser
from normlab.surgery.io import MANIFEST, load_hf
from normlab.surgery.zoo import build

transformers = pytest.importorskip("transformers")
TOL = 1e-5


@pytest.fixture(scope="module")
def models():
    return {name: build(name) for name in ("gpt2", "llama", "gemma", "t5", "vit", "bert")}


def _out(model, inputs):
    with torch.no_grad():
        return model_output(model.eval()(**inputs)).double()


def _inputs(model):
    return TRACED.probe_inputs(model, torch.Generator().manual_seed(3))


def _rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma", "t5", "vit"])
def test_a_fold_that_keeps_every_class_is_an_ordinary_folder(models, name, tmp_path):
    source = models[name]
    model, report = fold_norms(copy.deepcopy(source))
    save_converted(model, tmp_path, report)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["native"] and manifest["modules"] == {}
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == \
        source.config.model_type
    cls = getattr(transformers, type(source).__name__)
    plain, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    inputs = _inputs(source)
    torch.testing.assert_close(_out(plain, inputs), _out(model, inputs), rtol=0, atol=0)
    assert _rel(_out(plain, inputs), _out(source, inputs)) < TOL
    assert type(load_converted(tmp_path)) is type(source)


@pytest.mark.parametrize("case", ["gpt2-rmsnorm", "bert-dyt", "llama-flash"])
def test_a_result_no_class_expresses_is_refused_by_plain_from_pretrained(models, case, tmp_path):
    name = case.split("-")[0]
    source = models[name]
    operation = {
        "rmsnorm": to_rmsnorm,
        "dyt": lambda m: swap_norms(m, "dyt", approximate=True),
        "flash": lambda m: fold_norms(m, flash=True),
    }[case.split("-")[1]]
    model, report = operation(copy.deepcopy(source))
    save_converted(model, tmp_path, report)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert not manifest["native"] and manifest["why_not_native"]
    with pytest.raises(ValueError, match="normlab_converted"):
        transformers.AutoModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="normlab_converted"):
        transformers.AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(OSError, match=r"model\.safetensors"):
        getattr(transformers, type(source).__name__).from_pretrained(tmp_path)
    loaded = load_converted(tmp_path)
    inputs = _inputs(source)
    torch.testing.assert_close(_out(loaded, inputs), _out(model, inputs))


def test_a_fold_that_gives_a_reader_a_bias_is_not_native(models, tmp_path):
    # GPT-2's head has no bias; with a zero in ln_f's γ, β/γ cannot stay in the norm, so the
    # head gains a bias W·β, a parameter GPT2LMHeadModel does not have
    model = copy.deepcopy(models["gpt2"])
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = 0.0
    source = copy.deepcopy(model)
    model, fold = fold_norms(model)
    assert model.lm_head.bias is not None
    save_converted(model, tmp_path, fold)
    assert "lm_head.bias" in json.loads((tmp_path / MANIFEST).read_text())["why_not_native"]
    inputs = _inputs(model)
    torch.testing.assert_close(_out(load_converted(tmp_path), inputs), _out(model, inputs))
    assert _rel(_out(model, inputs), _out(source, inputs)) < TOL


def test_a_swap_then_a_fold_saves_and_loads(models, tmp_path):
    model = copy.deepcopy(models["llama"])
    model, swap = swap_norms(model, "layernorm", approximate=True)
    model, fold = fold_norms(model)
    save_converted(model, tmp_path, swap, fold)
    inputs = _inputs(model)
    torch.testing.assert_close(_out(load_converted(tmp_path), inputs), _out(model, inputs))


def test_save_refuses_a_non_empty_folder(models, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    model, report = to_rmsnorm(copy.deepcopy(models["gpt2"]))
    with pytest.raises(ValueError, match="not empty"):
        save_converted(model, tmp_path, report)
    save_converted(model, tmp_path, report, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # overwrite touches surgery files only


def test_diagnostics_load_a_converted_folder_as_what_it_is(models, tmp_path):
    model, report = to_rmsnorm(copy.deepcopy(models["gpt2"]))
    save_converted(model, tmp_path, report)
    loaded, causal = load_hf(tmp_path)
    assert causal and type(loaded.transformer.h[0].ln_1).__name__ == "RMSNorm"
    inputs = _inputs(model)
    torch.testing.assert_close(_out(loaded, inputs), _out(model, inputs))


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="normlab")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_convert_never_writes_into_its_source(models, tmp_path):
    src = tmp_path / "src"
    models["gpt2"].save_pretrained(src)
    before = sorted(p.name for p in src.iterdir())
    for out in (src, src / "inside"):
        with pytest.raises(ValueError, match="source folder or inside it"):
            _cli(["convert", str(src), "--to", "fold", "--out", str(out)])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        _cli(["convert", str(src), "--to", "fold", "--out", str(tmp_path / "full")])
    assert sorted(p.name for p in src.iterdir()) == before
    assert _cli(["convert", str(src), "--to", "fold", "--out", str(tmp_path / "full"),
                 "--overwrite"]) == 0
    assert (tmp_path / "full" / "x").read_text() == "keep"


def test_convert_reads_the_manifest_of_a_converted_source(models, tmp_path, capsys):
    src = tmp_path / "src"
    models["gpt2"].save_pretrained(src)
    assert _cli(["convert", str(src), "--to", "rmsnorm", "--out", str(tmp_path / "a")]) == 0
    # a converted folder is loaded as what it is: converting it again is refused with the reason
    assert _cli(["convert", str(tmp_path / "a"), "--to", "rmsnorm",
                 "--out", str(tmp_path / "b")]) == 2
    assert "already normalizes with RMSNorm" in capsys.readouterr().err
    assert _cli(["convert", str(tmp_path / "a"), "--to", "fold",
                 "--out", str(tmp_path / "c")]) == 0
    manifest = json.loads((tmp_path / "c" / MANIFEST).read_text())
    assert [r["operation"] for r in manifest["reports"]] == ["to_rmsnorm", "fold_norms"]
    inputs = _inputs(models["gpt2"])
    torch.testing.assert_close(_out(load_converted(tmp_path / "c"), inputs),
                               _out(load_converted(tmp_path / "a"), inputs))
