"""Normalization surgery on real models: swap, convert, fold, each local and measured.

    from normlab.surgery import swap_norms, to_rmsnorm, to_crmsnorm, fold_norms
    model, report = to_crmsnorm(model)          # GPT-2 (Pre-LN) → Pre-CRMSNorm, same logits
    print(report)                               # every site changed, max abs/rel output error
    save_converted(model, "out/", report); model = load_converted("out/")

Every call edits the given instance only (nothing is patched process-wide), returns
(model, Report), and raises ValueError naming the reason when it cannot do what it claims.
A HuggingFace model's layout is read from a traced probe forward (adapters/structure.py);
normlab's own models have a hand-written adapter (normlab.surgery.adapters).
"""

from normlab.surgery.convert import to_crmsnorm, to_rmsnorm
from normlab.surgery.fold import fold_norms
from normlab.surgery.io import load_converted, save_converted
from normlab.surgery.migrate import migrate_scales
from normlab.surgery.report import Change, Report
from normlab.surgery.swap import swap_norms

__all__ = [
    "Change",
    "Report",
    "fold_norms",
    "load_converted",
    "migrate_scales",
    "save_converted",
    "swap_norms",
    "to_crmsnorm",
    "to_rmsnorm",
]
