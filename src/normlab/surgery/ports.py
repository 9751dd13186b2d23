"""Exact weight edits on the modules around a norm: fold, recentre, compress.

A reader is a Linear that reads a norm's output n ∈ R^D; a writer adds its output to the
residual stream x ∈ R^D. With (out, in) weights (nn.Linear; GPT-2's Conv1D is stored (in, out)):

    fold γ, β into a reader:     W' = W·diag(γ),  b' = b + W β    so reader(γ⊙n + β) = reader'(n)
    recentre a writer:           W' = W − mean_D(W),  b' = b − mean_D(b)   (zero-mean output)
    compress a writer (D → D−1): keep the first D−1 output channels
    compress a reader (D → D−1): W' = W[:, :D−1] − W[:, D−1:D]           exact for zero-mean n

The maths runs in float64 on the parameter's device and is stored back in the parameter's
dtype, whatever device and dtype the folded vectors come in (`Identity.eval_affine()` gives CPU
float32 for a model on any device).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab.surgery.adapters.base import NormSite, Port
from normlab.surgery.report import Change


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_module(model, parent), name, new)


def _owner(model: nn.Module, port: Port) -> tuple[nn.Module, str, str | None]:
    """(module holding the tensors, weight attribute, bias attribute or None)."""
    if port.kind == "parameter":
        parent, _, name = port.path.rpartition(".")
        return get_module(model, parent), name, None
    bias = None if port.kind == "embedding" else "bias"
    return get_module(model, port.path), "weight", bias


# axis of the stream/norm channels D in each tensor: (weight, bias)
_WRITER_AXIS = {"linear": 0, "conv1d": 1, "embedding": 1, "conv2d": 0, "parameter": -1}
_READER_AXIS = {"linear": 1, "conv1d": 0}


def sync_shape_attrs(module: nn.Module) -> None:
    """Keep the size attributes of torch/HF layers in line with their (resized) weight."""
    w = module.weight
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif isinstance(module, nn.Embedding):
        module.embedding_dim = w.shape[1]
    elif isinstance(module, nn.Conv2d):
        module.out_channels = w.shape[0]
    elif type(module).__name__ == "Conv1D":  # HuggingFace's (in, out) layer reads self.nf
        module.nx, module.nf = w.shape


def set_param(
    module: nn.Module, name: str, value: Tensor, dtype: torch.dtype | None = None
) -> None:
    """Replace parameter `name` of `module` by `value` (any shape), keeping dtype and grad flag.

    A new parameter (the old one is None) takes `dtype`, else the value's dtype.
    """
    old = getattr(module, name)
    dtype = old.dtype if old is not None else (dtype or value.dtype)
    grad = old.requires_grad if old is not None else True
    # a copy with its own storage: a narrowed view would keep (and save) the full tensor
    setattr(module, name, nn.Parameter(value.detach().to(dtype).clone(), requires_grad=grad))
    if name == "weight":
        sync_shape_attrs(module)


def describe(model: nn.Module, port: Port) -> str:
    """A short label with the stored weight shape, for reports: "Linear weight (96, 32)"."""
    module, wname, _ = _owner(model, port)
    if port.kind == "parameter":
        return f"Parameter {tuple(getattr(module, wname).shape)}"
    return f"{type(module).__name__} weight {tuple(module.weight.shape)}"


def _reader_check(port: Port) -> int:
    if port.kind not in _READER_AXIS:
        raise ValueError(f"{port.path}: a {port.kind} cannot read a norm (Linear/Conv1D only)")
    return _READER_AXIS[port.kind]


@torch.no_grad()
def fold_into_reader(
    model: nn.Module, port: Port, scale: Tensor | None, shift: Tensor | None
) -> str:
    """Make reader(scale⊙n + shift) == reader'(n); return what changed, for the report."""
    axis = _reader_check(port)
    module, wname, bname = _owner(model, port)
    w = getattr(module, wname).double()
    done = []
    if shift is not None and bool(shift.ne(0).any()):
        # W β: contract the norm axis of W with β
        extra = torch.tensordot(w, shift.to(w.device, w.dtype), dims=([axis], [0]))
        bias = getattr(module, bname)
        if bias is None:
            set_param(module, bname, extra, dtype=getattr(module, wname).dtype)
            done.append("β → new bias W·β")
        else:
            set_param(module, bname, bias.double() + extra)
            done.append("β → bias += W·β")
    if scale is not None:
        shape = [1, 1]
        shape[axis] = -1
        set_param(module, wname, w * scale.to(w.device, w.dtype).reshape(shape))
        done.append("γ → W·diag(γ)")
    return ", ".join(done) or "nothing to fold (γ = 1, β = 0)"


def fold_site(
    model: nn.Module, site: NormSite, scale: Tensor | None, shift: Tensor | None, *,
    compress: bool = False,
) -> list[Change]:
    """Fold a norm's output map n ↦ scale⊙n + shift into every reader of `site`.

    The readers see s·(scale⊙n + shift), s = `site.input_scale`; the model keeps applying s after
    the norm, so scale folds as is and shift as s·shift. With `compress`, each reader then reads
    the D−1 stored channels of a zero-mean stream. Returns one report line per reader.
    """
    if shift is not None and site.input_scale != 1.0:
        shift = shift * site.input_scale
    changes = []
    for port in site.readers:
        old = describe(model, port)
        detail = fold_into_reader(model, port, scale, shift)
        if compress:
            compress_reader(model, port)
            detail += "; reads D−1 channels: W[:, :D−1] − W[:, D−1]"
        changes.append(Change(port.path, old, describe(model, port), detail))
    return changes


@torch.no_grad()
def recentre_writer(model: nn.Module, port: Port) -> None:
    """Subtract the mean over the stream channels from the writer's weight (and bias)."""
    module, wname, bname = _owner(model, port)
    axis = _WRITER_AXIS[port.kind]
    w = getattr(module, wname).double()
    set_param(module, wname, w - w.mean(axis, keepdim=True))
    if bname is not None and getattr(module, bname) is not None:
        b = getattr(module, bname).double()
        set_param(module, bname, b - b.mean())


@torch.no_grad()
def compress_writer(model: nn.Module, port: Port) -> None:
    """Keep the first D−1 stream channels of a (zero-mean) writer."""
    module, wname, bname = _owner(model, port)
    axis = _WRITER_AXIS[port.kind]
    w = getattr(module, wname)
    set_param(module, wname, w.narrow(axis, 0, w.shape[axis] - 1))
    if bname is not None and getattr(module, bname) is not None:
        b = getattr(module, bname)
        set_param(module, bname, b[:-1])


@torch.no_grad()
def compress_reader(model: nn.Module, port: Port) -> None:
    """W' = W[:, :D−1] − W[:, D−1:D] (norm axis): reads the D−1 stored channels of a zero-mean n."""
    axis = _reader_check(port)
    module, wname, _ = _owner(model, port)
    w = getattr(module, wname).double()
    d = w.shape[axis]
    set_param(module, wname, w.narrow(axis, 0, d - 1) - w.narrow(axis, d - 1, 1))


@torch.no_grad()
def untie(model: nn.Module, param_path: str) -> None:
    """Give the parameter at `param_path` its own copy of the tensor it shares."""
    parent, _, name = param_path.rpartition(".")
    module = get_module(model, parent)
    set_param(module, name, getattr(module, name))
