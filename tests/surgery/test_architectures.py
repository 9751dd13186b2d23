"""Every operation on every small-config architecture of `normlab.surgery.zoo`, its layout read
from a traced forward: exact where the structure allows, refused with the reason where not
(the table in docs/surgery.md)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch

from normlab.norms import Norm
from normlab.surgery import fold_norms, swap_norms, to_crmsnorm, to_rmsnorm
from normlab.surgery.adapters import TRACED, find_adapter, get_adapter
from normlab.surgery.adapters.traced import model_output
from normlab.surgery.table import foldable, same_family
from normlab.surgery.zoo import ZOO, build

pytest.importorskip("transformers")
TOL = 1e-5
PRE_LN = {"opt", "gpt_neox", "falcon", "bloom", "gpt2", "vit"}
# where fold_norms(model) refuses: a site it names, and what that site feeds
FOLD_REFUSED = {
    "qwen3": "q_norm", "gemma3": "q_norm", "olmo2": "q_norm",  # QK-norm before RoPE
    "mixtral": r"post_attention_layernorm feeds a non-Linear consumer \(_grouped_mm",  # experts
    "gemma2": r"post_attention_layernorm feeds a non-Linear consumer \(add",  # sandwich
    "bloom": "word_embeddings_layernorm",  # embedding norm: its output is the stream
    "bert": "embeddings.LayerNorm", "roberta": "embeddings.LayerNorm",  # Post-LN
    "bert-seqcls": "embeddings.LayerNorm",
}
CONVERT_REFUSED = "already normalizes with RMSNorm|not a Pre-LN norm"
# FlashNorm on these in the default suite (every norm kind, offset and reader layout), on the
# rest with -m slow
FLASH = {"llama", "gemma", "qwen3", "gpt2", "t5", "vit", "bloom", "bert-seqcls"}
NAMES = list(ZOO)
# the conversion's refusals in the default suite: RMSNorm, sandwich, reordered, Post-LN, T5
REFUSALS = {"llama", "gemma2", "olmo2", "bert", "t5"}


@functools.cache
def _built(name: str):
    return build(name)


@pytest.fixture
def arch(request):
    return request.param, _built(request.param)


def by_name(test):
    return pytest.mark.parametrize("arch", NAMES, indirect=True)(test)


def _outputs(model, inputs):
    with torch.no_grad():
        return model_output(model.eval()(**inputs)).double()


def _rel_err(model, source) -> float:
    """On inputs other than the report's probe (seed 1, the probe's is 0)."""
    inputs = TRACED.probe_inputs(source, torch.Generator().manual_seed(1))
    after, before = _outputs(model, inputs), _outputs(source, inputs)
    return ((after - before).abs().max() / before.abs().max()).item()


@by_name
def test_swapping_to_the_same_norm_is_exact(arch):
    _, source = arch
    assert find_adapter(source) is None and get_adapter(source) is TRACED  # no file of names
    model, report = swap_norms(copy.deepcopy(source), same_family(source))
    assert report.exact and report.max_rel_error < TOL
    assert all(isinstance(model.get_submodule(c.path), Norm) for c in report.changes)
    assert _rel_err(model, source) < TOL


@pytest.mark.parametrize(("arch", "flash"), [
    pytest.param(name, flash, id=f"{name}-{'flashnorm' if flash else 'fold'}",
                 marks=pytest.mark.slow if flash and name not in FLASH else ())
    for name in NAMES for flash in (False, True)
], indirect=["arch"])
def test_fold_is_exact_or_refused_with_the_reason(arch, flash):
    name, source = arch
    model = copy.deepcopy(source)
    where = None
    if name in FOLD_REFUSED:
        with pytest.raises(ValueError, match=FOLD_REFUSED[name]):
            fold_norms(model, flash=flash)
        assert all(torch.equal(a, b) for a, b in
                   zip(model.state_dict().values(), source.state_dict().values(), strict=True))
        where = foldable(model)
        if not where:
            return
    model, report = fold_norms(model, where, flash=flash)
    assert report.exact and report.max_rel_error < TOL
    assert _rel_err(model, source) < TOL
    if flash:
        assert any("FlashNorm" in c.detail for c in report.changes)


@pytest.mark.parametrize(("arch", "op"), [
    pytest.param(name, op, id=f"{name}-{op.__name__}", marks=() if name in PRE_LN or (
        op is to_rmsnorm and name in REFUSALS) else pytest.mark.slow)
    for name in NAMES for op in (to_rmsnorm, to_crmsnorm)
], indirect=["arch"])
def test_conversion_is_exact_on_pre_ln_models_and_refused_elsewhere(arch, op):
    name, source = arch
    model = copy.deepcopy(source)
    if name not in PRE_LN:
        with pytest.raises(ValueError, match=CONVERT_REFUSED):
            op(model)
        return
    model, report = op(model)
    assert report.exact and report.max_rel_error < TOL
    assert _rel_err(model, source) < TOL
    assert not [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]


def test_the_table_in_the_docs_states_what_these_tests_check():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "surgery.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in docs.splitlines() if line.startswith("| ") and line.count(" | ") == 7
            and line.split(" | ")[1].isidentifier() and " | exact" in line}
    assert set(rows) == set(NAMES)
    for name, cells in rows.items():
        fold, flash, rms, crms = (c.split(" ")[0] for c in cells[4:8])
        assert cells[2].startswith("exact") and cells[3].startswith("approx.")
        assert fold == flash == ("refused" if name in FOLD_REFUSED else "exact"), name
        assert rms == crms == ("exact" if name in PRE_LN else "refused"), name
