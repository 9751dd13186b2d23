"""The JSON document (schema, round trip), the plots drawn from it, and `normlab diagnose`."""

from __future__ import annotations

import argparse
import ast
import json
import math
from pathlib import Path

import pytest
import torch

import normlab
from normlab.diagnostics import command, diagnose, plots, schema
from normlab.models import GPT, GPTConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 150_000


@pytest.fixture(scope="module")
def doc():
    torch.manual_seed(0)
    model = GPT(GPTConfig(depth=3, dim=16, heads=2, norm="dyt", block_size=16)).eval()
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    return diagnose(model, [(x, x)], meta={"label": "tiny"})


def test_json_round_trip(doc, tmp_path):
    path = schema.write(doc, tmp_path / "d" / "diagnostics.json")
    assert schema.read(path) == json.loads(json.dumps(doc))
    assert doc["schema"] == "normlab.diagnostics" and doc["version"] == schema.VERSION
    assert doc["meta"]["label"] == "tiny" and doc["meta"]["loss_fn"] == "default_loss"
    dyt = doc["norms"][0]["dyt"]
    assert dyt["alpha"] == 0.5 and 0.0 <= dyt["saturation"] <= 1.0


def test_non_finite_values_survive(doc, tmp_path):
    broken = json.loads(json.dumps(doc))
    broken["blocks"][0]["output"]["variance"] = math.inf
    broken["blocks"][1]["angular_distance"] = math.nan
    back = schema.read(schema.write(broken, tmp_path / "broken.json"))
    assert back["blocks"][0]["output"]["variance"] == math.inf
    assert math.isnan(back["blocks"][1]["angular_distance"])


def test_check_rejects_foreign_documents(doc, tmp_path):
    with pytest.raises(ValueError, match="not a normlab diagnostics"):
        schema.check({"version": 1})
    with pytest.raises(ValueError, match="version 99"):
        schema.check({**doc, "version": 99})
    incomplete = json.loads(json.dumps(doc))
    del incomplete["blocks"][1]["grad"]
    with pytest.raises(ValueError, match=r"blocks\[1\]\.grad"):
        schema.check(incomplete)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        schema.read(tmp_path / "bad.json")


def check_pngs(paths: list[Path]) -> None:
    assert [p.name for p in paths] == ["variance_vs_depth.png", "grad_norm_vs_depth.png",
                                       "angular_distance_vs_depth.png", "outlier_heatmap.png",
                                       "s_curves.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) < MAX_PNG_BYTES, path


def test_plots_from_json_files_alone(doc, tmp_path):
    first = schema.write(doc, tmp_path / "a" / "diagnostics.json")
    other = json.loads(json.dumps(doc))
    for block in other["blocks"]:
        block["skip_loss_delta"] = None  # a run without skip losses still plots
    second = schema.write(other, tmp_path / "b" / "diagnostics.json")
    check_pngs(plots.plot_all({"a": first, "b": second}, tmp_path / "both"))


def test_plots_module_reads_json_only():
    tree = ast.parse(Path(plots.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "transformers")}
    assert not {m for m in imported if m.startswith("normlab") and m != "normlab.diagnostics"}


def run_cli(*argv: str, bench=None) -> int:
    parser = argparse.ArgumentParser(prog="normlab")
    command.add_parser(parser.add_subparsers(dest="command", required=True), bench=bench)
    args = parser.parse_args(["diagnose", *argv])
    return args.func(args)


def test_cli_gpt_then_replot(tmp_path, capsys):
    out = tmp_path / "post"
    assert run_cli("--gpt", "--set", "depth=2", "--set", "dim=16", "--set", "heads=2",
                   "--set", "placement=post", "--seq-len", "16", "--batch-size", "2",
                   "--out", str(out)) == 0
    doc = schema.read(out / "diagnostics.json")
    assert doc["meta"]["source"] == "gpt" and doc["meta"]["config"]["placement"] == "post"
    assert len(doc["blocks"]) == 2 and doc["steps"] == 2
    check_pngs(sorted(out.glob("*.png"), key=lambda p: [
        "variance_vs_depth.png", "grad_norm_vs_depth.png", "angular_distance_vs_depth.png",
        "outlier_heatmap.png", "s_curves.png"].index(p.name)))
    assert run_cli("--replot", str(out / "diagnostics.json"), str(out / "diagnostics.json"),
                   "--out", str(tmp_path / "cmp")) == 0
    assert len(list((tmp_path / "cmp").glob("*.png"))) == 5
    assert "diagnostics.json" in capsys.readouterr().out


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit, match="unknown GPT config field"):
        run_cli("--gpt", "--set", "depht=2", "--out", str(tmp_path))
    with pytest.raises(SystemExit, match="needs the bench"):
        run_cli("--preset", "smoke", "--out", str(tmp_path))
    with pytest.raises(SystemExit, match=r"no config\.json"):
        run_cli("--model", str(tmp_path), "--out", str(tmp_path))


def test_cli_preset_through_the_bench(tmp_path):
    bench = pytest.importorskip("normlab.bench")
    out = tmp_path / "smoke"
    assert run_cli("--preset", "smoke", "--set", "placement.name=lns", "--data", "random",
                   "--batches", "1", "--no-skip", "--no-plots", "--out", str(out), bench=bench) == 0
    assert not list(out.glob("*.png"))
    doc = schema.read(out / "diagnostics.json")
    assert doc["meta"]["config"]["placement"]["name"] == "lns"
    assert doc["meta"]["source"] == "preset:smoke" and len(doc["blocks"]) == 2


def test_cli_huggingface_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50,
                                     n_positions=16)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    out = tmp_path / "out"
    assert run_cli("--model", str(tmp_path / "gpt2"), "--seq-len", "8", "--batches", "1",
                   "--no-plots", "--out", str(out)) == 0
    doc = schema.read(out / "diagnostics.json")
    assert doc["meta"]["causal_lm"] is True and doc["model"]["class"] == "GPT2LMHeadModel"
    assert doc["skip"]["base_loss"] == pytest.approx(math.log(50), rel=0.15)


def test_version_is_recorded(doc):
    assert doc["normlab_version"] == normlab.__version__
