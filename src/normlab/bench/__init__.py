"""The bench: train small models under each normalization scheme and compare them.

    from normlab.bench import load_preset, expand, run_sweep
    cfg, sweep = load_preset("quick")
    run_sweep(expand(cfg, sweep), Path("runs/quick"))

`normlab bench --preset quick` does the same from the shell; see docs/bench.md.
"""

from normlab.bench.config import RunConfig
from normlab.bench.presets import expand, list_presets, load_preset
from normlab.bench.report import write_report
from normlab.bench.sweep import run_sweep
from normlab.bench.train import run

__all__ = ["RunConfig", "expand", "list_presets", "load_preset", "run", "run_sweep",
           "write_report"]
