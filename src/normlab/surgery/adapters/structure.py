"""An architecture read from the data flow of one probe forward (`trace.py`), not from a list.

For every norm module (`select.norm_modules`: torch, HuggingFace and normlab norms):

- **readers**: following its output forward through ops that move whole tokens and keep the
  channel axis (view, reshape, dtype casts, dropout in eval, token selection such as [CLS] or
  the last position) and through multiplications by a constant scalar, every consumer must be
  a Linear (`nn.Linear`, GPT-2's `Conv1D`) whose input is that tensor. Those Linears are the
  readers; any other consumer (an add to the stream, RoPE, an activation) makes the site
  "post" with that consumer named. A norm whose output the model also returns (a headless
  model's last hidden state) keeps its affine: it gets no readers;
- **the stream**: following its input backward through adds, constant scalar products and the
  same channel-keeping ops, every source must be a writer: a Linear, an embedding, a patch
  Conv2d or a parameter of width D. A norm output among the sources (Post-LN, sandwich norms,
  an embedding norm) or any other op is a reason the exact Pre-RMSNorm conversion does not
  apply, and so is a stream tensor that reaches anything but a norm, an add or the model
  output (a Linear reading the raw stream, as in OLMo-2's reordered blocks).

Nothing here knows a model family: the same walk gives GPT-2's fused Conv1D Q/K/V, Llama's
q/k/v, T5's cross-attention k/v reading the encoder's final norm, and ViT's classifier
reading [CLS].
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from normlab.surgery.adapters.base import Layout, NormSite, Port
from normlab.surgery.adapters.trace import Key, Op, Trace

# ops that move or cast whole channel vectors; kept only while the last axis stays D wide
_MOVE = {
    "view", "reshape", "contiguous", "to", "type_as", "float", "dropout", "clone",
    "__getitem__", "flatten", "detach", "expand", "alias", "squeeze", "unsqueeze",
}
_ADD = {"add", "__add__", "__radd__", "add_", "__iadd__"}
_STREAM_ONLY = {"transpose", "permute"}  # the patch grid of a ViT entering the stream
_MUL = {"mul", "__mul__", "__rmul__", "mul_", "__imul__"}
_DIV = {"div", "__truediv__", "div_", "__itruediv__"}


def port_kind(module: nn.Module) -> str | None:
    """The `Port` kind of a module that can read a norm or write the stream, else None."""
    if isinstance(module, nn.Linear):
        return "linear"
    if type(module).__name__ == "Conv1D":
        return "conv1d"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    return None


def _scalar(trace: Trace, op: Op, data: int) -> float | None:
    """The constant factor of a mul/div op whose data operand is input `data`, else None."""
    others = [k for i, k in enumerate(op.inputs) if i != data]
    sizes = [op.shapes[i] for i in range(len(op.inputs)) if i != data]
    if any(len(s) and _numel(s) != 1 for s in sizes) or len(others) + len(op.scalars) != 1:
        return None
    value = op.scalars[0] if op.scalars else float(trace.values[others[0]].item())
    if op.name in _DIV:
        return None if data != 0 or value == 0 else 1.0 / value
    return value


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass
class Readers:
    """What a norm's output flows into."""

    ports: dict[str, Port] = field(default_factory=dict)
    scales: set[float] = field(default_factory=set)
    others: list[str] = field(default_factory=list)
    returned: bool = False


def _where(op: Op) -> str:
    return op.stack[-1] if op.stack else "the model's forward"


def follow_output(trace: Trace, model: nn.Module, start: Key, dim: int) -> Readers:
    """Where the tensor `start` (a norm output of width `dim`) goes."""
    found = Readers()
    frontier, seen = [(start, 1.0)], set()
    while frontier:
        k, scale = frontier.pop()
        if k in seen:
            continue
        seen.add(k)
        found.returned |= k in trace.returned
        for _, op in trace.consumers_of(k):
            reader = _reader(trace, model, op, k)
            if reader is not None:
                found.ports[reader.path] = reader
                found.scales.add(scale)
                continue
            data = op.inputs.index(k)
            factor = _scalar(trace, op, data) if op.name in _MUL | _DIV else None
            keeps = all(s and s[-1] == dim for s in op.out_shapes)
            if op.name in _MOVE and keeps:
                frontier += [(o, scale) for o in op.outputs]
            elif factor is not None and keeps:
                frontier += [(o, scale * factor) for o in op.outputs]
            else:
                found.others.append(f"{op.name} in {_where(op)}")
    return found


def _reader(trace: Trace, model: nn.Module, op: Op, k: Key) -> Port | None:
    """The Linear on `op`'s module stack whose input is `k`, if any."""
    for path in reversed(op.stack):
        kind = port_kind(model.get_submodule(path))
        if kind in ("linear", "conv1d") and any(c.input == k for c in trace.calls[path]):
            return Port(path, kind)
    return None


@dataclass
class Sources:
    """Where a norm's input comes from."""

    writers: dict[str, Port] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    norm_outputs: set[str] = field(default_factory=set)  # norms whose output is a source
    keys: set[Key] = field(default_factory=set)
    ops: set[int] = field(default_factory=set)
    added: bool = False


def follow_input(
    trace: Trace, model: nn.Module, start: Key, dim: int, norms: set[str], found: Sources
) -> None:
    """Add to `found` the writers (and the problems) of the stream tensor `start`."""
    frontier = [start]
    while frontier:
        k = frontier.pop()
        if k in found.keys:
            continue
        found.keys.add(k)
        name = trace.param_name(k)
        if name is not None:
            shape = tuple(trace.values[k].shape)
            if shape and shape[-1] == dim:
                found.writers[name] = Port(name, "parameter")
            else:
                found.problems.append(f"parameter {name} of shape {shape}")
            continue
        modules = trace.returned_by.get(k, [])
        writer = next((p for p in modules if port_kind(model.get_submodule(p))), None)
        if writer is not None:
            found.writers[writer] = Port(writer, port_kind(model.get_submodule(writer)))
            continue
        norm = next((p for p in modules if p in norms), None)
        if norm is not None:
            found.norm_outputs.add(norm)
            continue
        index = trace.producer.get(k)
        if index is None:
            found.problems.append("a model input or buffer is part of the stream")
            continue
        op = trace.ops[index]
        found.ops.add(index)
        if op.name in _ADD | {"cat"}:
            found.added |= op.name in _ADD
            frontier += op.inputs
        elif op.name in _MOVE | _STREAM_ONLY:
            frontier.append(op.inputs[0])
        elif op.name in _MUL | _DIV and any(
            _scalar(trace, op, i) is not None for i in range(len(op.inputs))
        ):
            data = next(i for i in range(len(op.inputs)) if _scalar(trace, op, i) is not None)
            frontier.append(op.inputs[data])
        else:
            found.problems.append(f"{op.name} in {_where(op)} writes the stream")


def stream_leaks(
    trace: Trace, found: Sources, norm_inputs: dict[Key, set[str]]
) -> list[str]:
    """Consumers of stream tensors that are neither stream ops nor a norm reading them."""
    leaks = []
    for k in found.keys:
        if trace.param_name(k) is not None:
            continue
        for index, op in trace.consumers_of(k):
            if index in found.ops or norm_inputs.get(k, set()) & set(op.stack):
                continue
            if any(o in found.keys for o in op.outputs):
                continue
            leaks.append(f"the stream reaches {op.name} in {_where(op)} without a norm")
    return leaks


def read_layout(
    model: nn.Module, trace: Trace, norms: dict[str, int], kinds: dict[str, str], arch: str
) -> Layout:
    """The `Layout` of `model` from its trace. `norms`: norm path -> width; `kinds`: norm path ->
    "layernorm", "rmsnorm", ... (what it computes). A norm the probe did not run has no site,
    and the conversion is refused: its surroundings are unknown."""
    order = {p: min(trace.producer.get(c.output, -1) for c in trace.calls[p])
             for p in norms if trace.calls.get(p)}
    stream = Sources()
    norm_inputs: dict[Key, set[str]] = {}
    for p in order:
        for c in trace.calls[p]:
            norm_inputs.setdefault(c.input, set()).add(p)
    seen: list[tuple[str, Readers, Sources, bool, str, str]] = []
    for path in sorted(order, key=order.get):
        dim, readers, found = norms[path], Readers(), Sources()
        for call in trace.calls[path]:
            r = follow_output(trace, model, call.output, dim)
            readers.ports.update(r.ports)
            readers.scales |= r.scales
            readers.others += r.others
            readers.returned |= r.returned
            follow_input(trace, model, call.input, dim, set(norms), found)
        # a stream is a sum, or starts at an embedding or a norm; anything else is a branch's
        reads_stream = found.added or bool(found.norm_outputs) or any(
            p.kind in ("embedding", "parameter", "conv2d") for p in found.writers.values())
        role, why = "pre" if reads_stream else "inner", ""
        if readers.others or len(readers.scales) > 1:
            role, why = "post", (readers.others or ["readers at different scales"])[0]
        elif readers.returned:  # folding would change what the model returns
            readers.ports.clear()
        seen.append((path, readers, found, reads_stream, role, why))
    sources = set().union(*(found.norm_outputs for _, _, found, *_ in seen))
    sites: list[NormSite] = []
    for path, readers, found, reads_stream, role, why in seen:
        if path in sources and _starts_stream(found, role, readers):
            sites.append(NormSite(path, "start", why=why))
            continue
        if reads_stream:
            stream.writers.update(found.writers)
            stream.problems += found.problems
            stream.norm_outputs |= found.norm_outputs
            stream.keys |= found.keys
            stream.ops |= found.ops
        scale = next(iter(readers.scales)) if len(readers.scales) == 1 else 1.0
        ports = tuple(readers.ports.values()) if role != "post" else ()
        sites.append(NormSite(path, role, ports, input_scale=scale, why=why))
    starts = {s.path for s in sites if s.role == "start"}
    stream.problems += [f"the output of the norm {n} is part of the stream"
                        for n in sorted(stream.norm_outputs - starts)]
    last_stream = max((i for i, s in enumerate(sites) if s.role == "pre"), default=None)
    if last_stream is not None:
        s = sites[last_stream]
        sites[last_stream] = NormSite(s.path, "final", s.readers, s.input_scale, s.why)
    unrun = [p for p in norms if p not in order]
    refusal = _refusal(sites, kinds, stream, stream_leaks(trace, stream, norm_inputs), unrun)
    return Layout(arch, tuple(sites), tuple(stream.writers.values()), _ties(model, sites),
                  refusal)


def _starts_stream(found: Sources, role: str, readers: Readers) -> bool:
    """Whether a norm is the first term of the stream: it reads only embeddings (no sum, no
    other norm) and its output goes to the stream (norms, adds), not to a Linear."""
    plain = all(p.kind in ("embedding", "parameter") for p in found.writers.values())
    return (role == "post" and plain and bool(found.writers) and not found.added
            and not found.problems and not found.norm_outputs and not readers.ports)


def _refusal(
    sites: list[NormSite], kinds: dict[str, str], stream: Sources, leaks: list[str],
    unrun: list[str],
) -> str | None:
    """Why the exact Pre-LN → Pre-RMSNorm conversion does not apply, or None."""
    if unrun:
        return (
            f"{unrun[0]} (a norm) did not run in the probe forward, so what it reads and feeds "
            f"is unknown (a branch the probe inputs do not take, such as cross-attention "
            f"without encoder states); the stream it would see could not be recentred"
        )
    rms = [s.path for s in sites if kinds.get(s.path) == "rmsnorm"]
    if rms and len(rms) == len(sites):
        return (
            f"the model already normalizes with RMSNorm ({rms[0]}, ...): there is no mean "
            f"subtraction to remove, and to_crmsnorm needs a zero-mean residual stream, which a "
            f"model trained with RMSNorm does not have. Use fold_norms to fold the RMSNorm "
            f"gains into the Linears that read them"
        )
    post = [s for s in sites if s.role == "post"]
    if post:
        return (
            f"{post[0].path} is not a Pre-LN norm: its output reaches {post[0].why} (a Post-LN "
            f"or sandwich norm, or a norm inside a branch); the exact Pre-RMSNorm conversion "
            f"needs every norm to read the residual stream and feed only Linears"
        )
    problems = stream.problems + leaks
    if problems:
        return (
            f"the residual stream is not a plain sum of Linear/embedding outputs ({problems[0]}"
            f"), so recentring its writers would not make every norm input zero-mean"
        )
    if not stream.writers:
        return "no module writing a residual stream was found"
    return None


def _ties(model: nn.Module, sites: list[NormSite]) -> tuple[tuple[str, str], ...]:
    """(reader weight, embedding weight) pairs that are one tensor now."""
    embeddings = {id(m.weight): path for path, m in model.named_modules()
                  if isinstance(m, nn.Embedding)}
    ties = {}
    for site in sites:
        for port in site.readers:
            weight = model.get_submodule(port.path).weight
            if id(weight) in embeddings:
                ties[f"{port.path}.weight"] = f"{embeddings[id(weight)]}.weight"
    return tuple(ties.items())
