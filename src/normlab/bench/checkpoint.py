"""Checkpoints that never unpickle: safetensors for tensors, JSON for everything else.

Layout of one checkpoint, `RUN_DIR/checkpoints/step_0000100/`:

    model.safetensors   model state (tensors that share storage, e.g. tied embeddings, once)
    optim.safetensors   the optimizer state's tensors, flattened as "state.<param>.<key>"
    state.safetensors   RNG states and data-generator states, one entry per rank
    manifest.json       step, resolved config, SHA-256 of each file, name -> shape/dtype of
                        every model tensor, the optimizer's non-tensor structure, loop state

The directory is written under a temporary name and renamed into place (os.replace), then the
`latest` pointer is replaced atomically: a run killed at any moment leaves the previous
checkpoint intact. Loading checks every hash, the config and every tensor shape, and refuses
with a ValueError that names the mismatch. A config field that the checkpoint's config lacks
(added to `RunConfig` later) is compared as its default. A failed write (a full disk) leaves
no partial folder behind, and pruning never removes the checkpoint `latest` names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from normlab.bench.rundir import config_diff

FORMAT = "normlab.bench.checkpoint"
VERSION = 1
FILES = ("model.safetensors", "optim.safetensors", "state.safetensors")


@dataclass
class Checkpoint:
    """What `load` returns: tensors on CPU plus the JSON-side loop state."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    loop: dict[str, Any]
    path: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors to store (CPU, contiguous) and aliases {name: stored name} for shared storage."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        stored[name] = tensor.detach().to("cpu").contiguous().clone()
    return stored, aliases


def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        raise AssertionError("tensors are flattened before encoding")
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into flat tensors and a JSON structure that names them."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        per_param[str(param_id)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                name = f"state.{param_id}.{key}"
                tensors[name] = value.detach().to("cpu").contiguous().clone()
                per_param[str(param_id)][key] = {"__tensor__": name}
            else:
                per_param[str(param_id)][key] = _encode(value)
    structure = {"state": per_param, "param_groups": _encode(state["param_groups"]),
                 "int_keys": all(isinstance(k, int) for k in state["state"])}
    return tensors, structure


def unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict:
    """The inverse of `flatten_optimizer`."""
    state: dict[Any, dict[str, Any]] = {}
    for param_id, entries in structure["state"].items():
        key = int(param_id) if structure["int_keys"] else param_id
        state[key] = {}
        for name, value in entries.items():
            if isinstance(value, dict) and set(value) == {"__tensor__"}:
                if value["__tensor__"] not in tensors:
                    raise ValueError(f"optimizer tensor {value['__tensor__']!r} is missing "
                                     "from optim.safetensors")
                state[key][name] = tensors[value["__tensor__"]]
            else:
                state[key][name] = _decode(value)
    return {"state": state, "param_groups": _decode(structure["param_groups"])}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(run_dir: Path, step: int, *, model: dict[str, torch.Tensor], optimizer: dict[str, Any],
         tensors: dict[str, torch.Tensor], loop: dict[str, Any], config: dict[str, Any],
         keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep` checkpoints.

    If writing fails (a full disk), the partial temporary folder is removed and the error
    propagates: `latest` still names the previous complete checkpoint.
    """
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:07d}"
    tmp = folder / f".tmp-step_{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(tmp, step, model=model, optimizer=optimizer, tensors=tensors, loop=loop,
               config=config)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = folder / f".latest.{os.getpid()}.tmp"
    try:
        pointer.write_text(final.name)
        os.replace(pointer, folder / "latest")
    except BaseException:
        pointer.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    _prune(folder, final, keep)
    return final


def _write(tmp: Path, step: int, *, model, optimizer, tensors, loop, config) -> None:
    """Every file of one checkpoint into the fresh folder `tmp`, each fsynced."""
    tmp.mkdir()
    stored, aliases = _dedupe(model)
    optim_tensors, optim_structure = flatten_optimizer(optimizer)
    save_file(stored, tmp / "model.safetensors")
    save_file(optim_tensors, tmp / "optim.safetensors")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
              tmp / "state.safetensors")
    manifest = {
        "format": FORMAT, "version": VERSION, "step": step, "config": config,
        "files": {name: _sha256(tmp / name) for name in FILES},
        "model_tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1]}
                          for name, t in model.items()},
        "aliases": aliases, "optimizer": optim_structure, "loop": loop,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    for name in (*FILES, "manifest.json"):
        with (tmp / name).open("rb") as handle:
            os.fsync(handle.fileno())


def _prune(folder: Path, newest: Path, keep: int) -> None:
    """Keep `newest` (the one `latest` names) and the `keep` - 1 checkpoints just before it;
    remove the rest, including any of a later step (left by a history this run replaced)."""
    others = sorted(p for p in folder.glob("step_*") if p.is_dir() and p != newest)
    earlier = [p for p in others if p.name < newest.name]
    kept = set(earlier[-(keep - 1):]) if keep > 1 else set()
    for old in others:
        if old not in kept:
            shutil.rmtree(old)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_dir() else None


def load(path: Path, *, config: dict[str, Any],
         expected: dict[str, torch.Tensor]) -> Checkpoint:
    """Read and verify a checkpoint directory against the run's config and the model's tensors.

    `expected` is the model's own state dict (its names, shapes and dtypes are compared).
    """
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable normlab checkpoint: {error}") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{path} is not a normlab checkpoint of format version {VERSION}")
    for name in FILES:
        file = path / name
        if not file.is_file():
            raise ValueError(f"checkpoint {path} lacks {name}; refusing to resume")
        if _sha256(file) != manifest["files"].get(name):
            raise ValueError(f"checkpoint file {file} does not match the SHA-256 in its manifest "
                             "(modified or truncated after it was written); refusing to load")
    diffs = config_diff(manifest["config"], config)
    if diffs:
        raise ValueError(f"checkpoint {path} was written for a different config: "
                         + "; ".join(diffs[:5]))
    saved_shapes = manifest["model_tensors"]
    wanted = {n: {"shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1]}
              for n, t in expected.items()}
    missing, unexpected = sorted(set(wanted) - set(saved_shapes)), sorted(set(saved_shapes)
                                                                          - set(wanted))
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for name, spec in wanted.items():
        if saved_shapes[name] != spec:
            saved = saved_shapes[name]
            raise ValueError(f"checkpoint tensor {name!r} has shape {saved['shape']} "
                             f"({saved['dtype']}) but the model expects {spec['shape']} "
                             f"({spec['dtype']})")
    stored = load_file(path / "model.safetensors")
    model = {}
    for name in wanted:
        source = manifest["aliases"].get(name, name)
        if source not in stored or list(stored[source].shape) != wanted[name]["shape"]:
            raise ValueError(f"checkpoint tensor {name!r} is missing or has the wrong shape "
                             "in model.safetensors")
        model[name] = stored[source]
    optimizer = unflatten_optimizer(load_file(path / "optim.safetensors"), manifest["optimizer"])
    return Checkpoint(step=manifest["step"], model=model, optimizer=optimizer,
                      tensors=load_file(path / "state.safetensors"), loop=manifest["loop"],
                      path=path)
