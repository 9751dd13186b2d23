"""Diagnostics: what normalization does to a network, block by block, on any `nn.Module`.

    from normlab.diagnostics import Recorder, summarize, diagnose, plots, schema
    report = diagnose(model, batches)            # record, summarize, skip-a-block losses
    schema.write(report, "out/diagnostics.json")
    plots.plot_all(report, "out/")               # PNGs drawn from the JSON alone

`metrics` holds the pure functions; `Recorder` only collects (hooks); `summarize` turns a
recording into the versioned JSON document described in docs/diagnostics.md.
"""

from normlab.diagnostics import metrics, schema
from normlab.diagnostics.ablation import skip_block_losses
from normlab.diagnostics.recorder import Recorder, Recording
from normlab.diagnostics.run import default_loss, diagnose
from normlab.diagnostics.select import select_blocks, select_norms
from normlab.diagnostics.summarize import summarize

__all__ = [
    "Recorder",
    "Recording",
    "default_loss",
    "diagnose",
    "metrics",
    "schema",
    "select_blocks",
    "select_norms",
    "skip_block_losses",
    "summarize",
]
