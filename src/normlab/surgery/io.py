"""Saving and loading converted HuggingFace models so that nothing downstream mistakes them.

`save_converted(model, dir, *reports)` writes one of two kinds of folder, both with
`normlab_surgery.json` (the format, whether the folder is native, the model class, the source
`model_type`, the constructor specs of the replaced modules, every report):

- **native**: the model still has exactly the modules and parameters its class builds from its
  config (a fold that kept every class: γ in the readers, norm weights 1). It is an ordinary
  `save_pretrained` folder (config.json, model.safetensors) that plain `from_pretrained` loads
  with the same outputs, no weight missing or re-initialized.
- **converted**: anything else (normlab norms, a D−1 stream, FlashNorm readers, new biases).
  config.json says `model_type: "normlab_converted"` and `architectures: ["NormlabConverted"]`
  (the source type is kept under `normlab_source_model_type`) and the tensors are in
  `normlab_model.safetensors`, so `AutoModel*.from_pretrained` refuses the folder at its config
  and a model class's own `from_pretrained` finds no weights file: neither loads it silently
  as its source. Only `load_converted(dir)` loads it: it builds the source class from the
  config, puts the recorded modules back (`translate.build_module`), gives every parameter
  the shape stored in the file, and loads the tensors strictly.

`load_source` (for `normlab convert`) and `load_hf` (for `normlab diagnose --model`) read the
manifest first: a converted folder loads as what it is. `transformers` is imported inside these
loaders only, so importing normlab never needs it. Nothing a user wrote is overwritten: a
non-empty output folder is refused unless overwrite=True.
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
from normlab.surgery.flashnorm import DeferredNormLinear
from normlab.surgery.ports import get_module, set_module, set_param
from normlab.surgery.report import Report
from normlab.surgery.stream_start import RecentredNorm
from normlab.surgery.translate import AFFINE_REMOVED, Folded, build_module

MANIFEST = "normlab_surgery.json"
WEIGHTS = "normlab_model.safetensors"
FORMAT = "normlab-surgery/2"
CONVERTED_TYPE = "normlab_converted"
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# what either kind of folder holds; removed first when overwriting
_WRITTEN = ("config.json", "generation_config.json", "model.safetensors",
            "model.safetensors.index.json", WEIGHTS, MANIFEST)


def _transformers():
    """The `transformers` package, or ValueError naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise ValueError("loading a HuggingFace model needs the `transformers` package (the hf "
                         "extra: pip install 'normlab[hf]')") from None
    return transformers


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The surgery manifest of a folder, or None when it has none (an unconverted model)."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        return None
    manifest = json.loads(file.read_text())
    if manifest.get("format") not in (FORMAT, "normlab-surgery/1"):
        raise ValueError(f"{file}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    return manifest


def load_source(path: str | Path) -> nn.Module:
    """A folder loaded as what it is: a surgery output through `load_converted`, else a
    save_pretrained folder as its saved architecture (config.architectures[0])."""
    if read_manifest(path) is not None:
        return load_converted(path)
    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(path)
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    model = (cls or transformers.AutoModel).from_pretrained(path)
    return model.eval()


def load_hf(path: str | Path) -> tuple[nn.Module, bool]:
    """A HuggingFace model from a folder, offline (HF_HUB_OFFLINE=1, local files only), and
    whether it is a causal LM.

    A surgery output loads through `load_converted` (its manifest names the class). Otherwise
    causal LMs (config `architectures` ending in ForCausalLM / LMHeadModel) load with
    `AutoModelForCausalLM`, so the diagnostics see their own next-token loss; anything else
    loads with `AutoModel` (a bare encoder such as BERT or MiniLM).
    """
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} is not a HuggingFace model folder (no config.json); give "
                         "the directory written by model.save_pretrained(...)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    manifest = read_manifest(folder)
    if manifest is not None:
        architecture = manifest["architecture"]
        return load_converted(folder), architecture.endswith(CAUSAL_SUFFIXES)
    transformers = _transformers()
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    causal = any(a.endswith(CAUSAL_SUFFIXES) for a in architectures)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    return auto.from_pretrained(folder, local_files_only=True), causal


def check_out(out: str | Path, overwrite: bool) -> Path:
    """ValueError when `out` cannot take a surgery output: not a directory, or not empty
    without `overwrite`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} is not empty; choose an empty or new folder, or pass "
                         f"overwrite=True (--overwrite) to replace a surgery output there")
    return out


def prepare_out(out: str | Path, overwrite: bool) -> Path:
    """The output folder, checked (`check_out`) and emptied of the files a surgery folder holds
    (nothing else) when `overwrite`."""
    out = check_out(out, overwrite)
    if out.is_dir():
        for name in _WRITTEN:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def native_difference(model: nn.Module) -> str | None:
    """None when `model` has exactly the modules and parameter shapes its class builds from its
    config (plain `from_pretrained` then restores it); else the first difference."""
    for name, module in model.named_modules():
        if isinstance(module, Norm | Folded | DeferredNormLinear | RecentredNorm):
            return f"{name} is a normlab module ({type(module).__name__})"
    with torch.device("meta"):
        fresh = type(model)(model.config)
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for k in sorted(want.keys() | have.keys()):
        if want.get(k) != have.get(k):
            return f"{k}: {have.get(k)} here, {want.get(k)} in a fresh {type(model).__name__}"
    return None


def save_converted(
    model: nn.Module, out_dir: str | Path, *reports: Report,
    base: dict[str, Any] | None = None, overwrite: bool = False,
) -> Path:
    """Write a surgery result so that `load_converted(out_dir)` restores it and plain
    `from_pretrained` either restores it too (native) or refuses it (see the module docstring).

    `reports` are the Reports of every surgery call made on the model since it was loaded, in
    order; they carry the specs of the modules that replaced the originals. `base` is the
    manifest of the folder the model was loaded from when that was a surgery output itself
    (`read_manifest`): its modules and reports come first.
    """
    if not reports:
        raise ValueError("save_converted: pass the Report(s) of the surgery calls on the model")
    if not hasattr(model, "config") or not hasattr(model.config, "save_pretrained"):
        raise ValueError(
            f"save_converted handles HuggingFace models (with a config); got "
            f"{type(model).__name__}. Save a normlab model with its state_dict"
        )
    modules: dict[str, Any] = dict(base["modules"]) if base else {}
    for report in reports:
        for change in report.changes:
            if change.spec == AFFINE_REMOVED and change.path in modules:
                built = modules[change.path]
                modules[change.path] = {**built, "kwargs": {**built["kwargs"], "affine": False}}
            elif change.spec is not None and change.spec != AFFINE_REMOVED:
                modules[change.path] = change.spec
    for name, module in model.named_modules():
        if isinstance(module, Norm | Folded | DeferredNormLinear | RecentredNorm) \
                and name not in modules:
            raise ValueError(
                f"save_converted: {name} ({type(module).__name__}) was changed in place and has "
                f"no constructor spec in the reports given, so it cannot be rebuilt on load"
            )
    source_type = (base or {}).get("source_model_type", model.config.model_type)
    why = native_difference(model)
    manifest = {
        "format": FORMAT,
        "native": why is None,
        "why_not_native": why,
        "architecture": type(model).__name__,
        "source_model_type": source_type,
        "modules": modules,
        "reports": list((base or {}).get("reports", [])) + [r.to_dict() for r in reports],
    }
    text = json.dumps(manifest, indent=1)  # fails here, not halfway, on a non-JSON spec
    out = prepare_out(out_dir, overwrite)
    if why is None:
        model.save_pretrained(out)
    else:
        config = model.config.to_dict()
        config.update(
            model_type=CONVERTED_TYPE, architectures=["NormlabConverted"],
            normlab_source_model_type=source_type,
            normlab_note="a normlab surgery result that no transformers class expresses; "
                         "load it with normlab.surgery.load_converted(path)",
        )
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
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
    """Load a folder written by `save_converted` (or `normlab convert`), in eval mode."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise ValueError(
            f"load_converted: {path / MANIFEST} not found; {path} is not a normlab surgery output "
            f"(use transformers' from_pretrained for an unconverted model)"
        )
    transformers = _transformers()
    cls = getattr(transformers, manifest["architecture"])
    if manifest.get("native"):
        return cls.from_pretrained(path, local_files_only=True).eval()
    config_dict = json.loads((path / "config.json").read_text())
    model_type = config_dict.pop("normlab_source_model_type", config_dict["model_type"])
    config_dict.pop("normlab_note", None)
    config_dict.update(model_type=model_type, architectures=[manifest["architecture"]])
    config = type(transformers.AutoConfig.for_model(model_type)).from_dict(config_dict)
    model = cls(config)
    for name, spec in manifest["modules"].items():
        set_module(model, name, build_module(spec))
    weights = path / (WEIGHTS if manifest["format"] == FORMAT else "model.safetensors")
    _adopt_shapes(model, weights)
    load_model(model, str(weights), strict=True)
    return model.eval()
