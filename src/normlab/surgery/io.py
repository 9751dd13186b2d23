"""Saving and loading converted HuggingFace models, without pickles.

A converted model no longer matches its config's structure (normlab norms in place of
LayerNorms, heads with new biases, a D−1 stream for CRMSNorm), so `from_pretrained` cannot
rebuild it. `save_converted` writes three files:

    config.json              the model's config (tie_word_embeddings=False once untied)
    model.safetensors        every tensor, in its converted shape
    normlab_surgery.json     the model class, the specs of the replaced modules, the reports

and `load_converted(dir)` builds the model class from the config, puts the recorded modules
back (`translate.build_module`), gives every parameter the shape stored in the safetensors
file, and loads the tensors strictly. `load_source` and `load_hf` load unconverted
`save_pretrained` folders, for surgery and for the diagnostics. `transformers` is imported
inside these loaders only, so importing normlab never needs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from normlab.norms import Norm
from normlab.surgery.ports import get_module, set_module, set_param
from normlab.surgery.report import Report
from normlab.surgery.translate import Folded, build_module

MANIFEST = "normlab_surgery.json"
WEIGHTS = "model.safetensors"
FORMAT = "normlab-surgery/1"
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def _transformers():
    """The `transformers` package, or ValueError naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise ValueError("loading a HuggingFace model needs the `transformers` package (the hf "
                         "extra: pip install 'normlab[hf]')") from None
    return transformers


def load_source(path: str | Path) -> nn.Module:
    """A save_pretrained directory loaded as its saved architecture (config.architectures[0])."""
    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(path)
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    model = (cls or transformers.AutoModel).from_pretrained(path)
    return model.eval()


def load_hf(path: str | Path) -> tuple[nn.Module, bool]:
    """A HuggingFace model from a `save_pretrained` folder, offline (HF_HUB_OFFLINE=1, local
    files only), and whether it is a causal LM.

    Causal LMs (config `architectures` ending in ForCausalLM / LMHeadModel) load with
    `AutoModelForCausalLM`, so the diagnostics see their own next-token loss; anything else
    loads with `AutoModel` (a bare encoder such as BERT or MiniLM).
    """
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} is not a HuggingFace model folder (no config.json); give "
                         "the directory written by model.save_pretrained(...)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = _transformers()
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    causal = any(a.endswith(CAUSAL_SUFFIXES) for a in architectures)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    return auto.from_pretrained(folder, local_files_only=True), causal


def save_converted(model: nn.Module, out_dir: str | Path, *reports: Report) -> Path:
    """Write a converted HuggingFace model so that `load_converted(out_dir)` restores it.

    `reports` are the Reports of every surgery call made on the model since it was loaded, in
    order; they carry the specs of the modules that replaced the originals.
    """
    if not reports:
        raise ValueError("save_converted: pass the Report(s) of the surgery calls on the model")
    if not hasattr(model, "config") or not hasattr(model.config, "save_pretrained"):
        raise ValueError(
            f"save_converted handles HuggingFace models (with a config); got "
            f"{type(model).__name__}. Save a normlab model with its state_dict"
        )
    modules: dict[str, Any] = {}
    for report in reports:
        for change in report.changes:
            if change.spec is not None:
                modules[change.path] = change.spec
    for name, module in model.named_modules():
        if isinstance(module, Norm | Folded) and name not in modules:
            raise ValueError(
                f"save_converted: {name} ({type(module).__name__}) was changed in place and has "
                f"no constructor spec in the reports given, so it cannot be rebuilt on load"
            )
    manifest = {
        "format": FORMAT,
        "architecture": type(model).__name__,
        "modules": modules,
        "reports": [r.to_dict() for r in reports],
    }
    text = json.dumps(manifest, indent=1)  # fails here, not halfway, on a non-JSON spec
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    save_model(model, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / MANIFEST).write_text(text)
    return out


def _adopt_shapes(model: nn.Module, path: Path) -> None:
    """Give each parameter the shape the file stores (new biases, D−1 widths)."""
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118  (safe_open is not a mapping)
            shape = tuple(f.get_slice(key).get_shape())
            parent, _, name = key.rpartition(".")
            module = get_module(model, parent)
            if name in module._buffers:
                continue
            current = getattr(module, name, None)
            if current is None or tuple(current.shape) != shape:
                dtype = current.dtype if current is not None else torch.get_default_dtype()
                set_param(module, name, torch.empty(shape), dtype=dtype)


def load_converted(path: str | Path) -> nn.Module:
    """Rebuild a model written by `save_converted` (or `normlab convert`), in eval mode."""
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise ValueError(
            f"load_converted: {manifest_file} not found; {path} is not a normlab surgery output "
            f"(use transformers' from_pretrained for an unconverted model)"
        )
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"load_converted: unknown format {manifest.get('format')!r} ({FORMAT})")
    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(path)
    model = getattr(transformers, manifest["architecture"])(config)
    for name, spec in manifest["modules"].items():
        set_module(model, name, build_module(spec))
    _adopt_shapes(model, path / WEIGHTS)
    load_model(model, str(path / WEIGHTS), strict=True)
    return model.eval()
