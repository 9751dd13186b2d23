"""The diagnostics JSON file: its identity, version, required keys, reading and writing.

docs/diagnostics.md describes every field. A reader accepts exactly `VERSION`; a change that
renames or removes a field, or changes its meaning, bumps it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA = "normlab.diagnostics"
VERSION = 1

TOP_LEVEL = ("schema", "version", "normlab_version", "model", "meta", "steps", "blocks",
             "norms", "massive_activations", "skip")
BLOCK_KEYS = ("index", "name", "class", "input", "output", "angular_distance", "grad",
              "skip_loss_delta", "outliers")
# A norm's declared scalars (`NormInfo.scalars`) and its saturation (`NormInfo.squash`). The
# field keeps the name it had when DyT was the only norm declaring any, so that version 1
# files and the bench's diagnostics.jsonl keep one format.
SCALARS = "dyt"
NORM_KEYS = ("name", "class", "kind", "stats", "block", "input", "output", "s_curve", SCALARS,
             "batch_stats")


def check(data: Any) -> dict[str, Any]:
    """Return `data` if it is a diagnostics dict of this version, else raise ValueError."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"not a normlab diagnostics document (expected \"schema\": {SCHEMA!r}); "
                         "make one with `normlab diagnose` or diagnostics.summarize()")
    if data.get("version") != VERSION:
        raise ValueError(f"diagnostics version {data.get('version')!r} is not supported by this "
                         f"normlab (it reads version {VERSION}); re-run `normlab diagnose`")
    missing = [k for k in TOP_LEVEL if k not in data]
    missing += [f"blocks[{i}].{k}" for i, b in enumerate(data["blocks"]) for k in BLOCK_KEYS
                if k not in b]
    missing += [f"norms[{i}].{k}" for i, n in enumerate(data["norms"]) for k in NORM_KEYS
                if k not in n]
    if missing:
        raise ValueError(f"diagnostics document is missing {', '.join(missing)}")
    return data


def write(data: dict[str, Any], path: str | Path) -> Path:
    """Write `data` (checked) as JSON, one block, norm or massive activation per line.

    Non-finite floats are written as NaN/Infinity, which Python's json module reads back: a
    diverged model stays visible in the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = check(data)
    lists = {key: data[key] for key in ("blocks", "norms", "massive_activations")}
    head = json.dumps({k: v for k, v in data.items() if k not in lists}, indent=1)
    body = ",\n".join(
        f' "{key}": [\n' + ",\n".join("  " + json.dumps(item) for item in items) + "\n ]"
        for key, items in lists.items()
    )
    path.write_text(head[:-2] + ",\n" + body + "\n}\n")
    return path


def read(path: str | Path) -> dict[str, Any]:
    """Read and check a diagnostics JSON file."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return check(data)
