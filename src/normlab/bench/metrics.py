"""A run's metrics.jsonl and the summary computed from it (shared by train and report)."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def read_json(path: Path) -> Any:
    """The JSON value in `path`; a ValueError naming the file and the line if it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None


def read_metrics(path: Path) -> list[Record]:
    """The records of a metrics.jsonl file ([] if it does not exist).

    A last line without its newline is the trace of a write cut short (a kill or a full disk
    mid-append) and is dropped; any other malformed line is a ValueError naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(errors="replace")
    complete = text.split("\n")[:-1]  # the part after the last newline was cut short
    records = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON record ({error.msg})") from None
        if not isinstance(record, dict) or "step" not in record:
            raise ValueError(f"{path}, line {number}: a record is a JSON object with a 'step'")
        records.append(record)
    return records


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step (temp file + os.replace); on failure (a full
    disk) the temporary file is removed and `path` keeps its old content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_metrics(path: Path, records: list[Record]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def summarize(records: list[Record]) -> dict[str, Any]:
    """Status and headline numbers of one run, from its metrics records alone.

    tokens/s is the median over the logged steps after the first 10% (those pay for
    allocation and warm-up); the final validation loss is the last evaluation's, and is None
    for a diverged run.
    """
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    diverged = [r for r in records if r["kind"] == "diverged"]
    skip = max(1, len(train) // 10)
    speeds = [r["tokens_per_s"] for r in train[skip:]] or [r["tokens_per_s"] for r in train]
    summary = {
        "steps_done": train[-1]["step"] if train else 0,
        "diverged_step": diverged[-1]["step"] if diverged else None,
        "final_train_loss": train[-1]["loss"] if train else None,
        "final_val_loss": evals[-1]["val_loss"] if evals and not diverged else None,
        "best_val_loss": min((r["val_loss"] for r in evals), default=None),
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "peak_mem_bytes": max((r["mem_bytes"] for r in train if r.get("mem_bytes")),
                              default=None),
    }
    if evals and "val_acc" in evals[-1] and not diverged:
        summary["final_val_acc"] = evals[-1]["val_acc"]
    return summary
