"""Claim 5b: the Pre-LN -> Pre-RMSNorm / Pre-CRMSNorm conversion is exact on a trained model.

    python docs/reproduction/convert_trained.py runs/claim-5/arms/layernorm-s0
"""
import copy
import json
import sys
from pathlib import Path

import torch

from normlab.bench import checkpoint
from normlab.bench import config as C
from normlab.bench import data as D
from normlab.bench.train import build_model
from normlab.surgery import to_crmsnorm, to_rmsnorm

run = Path(sys.argv[1])
raw = json.loads((run / "config.json").read_text())
cfg = C.from_dict(C.RunConfig, raw)
model = build_model(cfg)
ckpt = checkpoint.load(checkpoint.latest(run), config=raw, expected=model.state_dict())
model.load_state_dict(ckpt.model)
model.eval()
data = D.load_data(cfg.data)
batches = list(data.val_batches(8))
def evaluate(m):
    with torch.no_grad():
        outs = [m(x, y) for x, y in batches]
    return torch.cat([o[0] for o in outs]), sum(o[1].item() for o in outs) / len(outs)
ref_logits, ref_loss = evaluate(model)
print(f"{run.name} step {ckpt.step}: val loss {ref_loss:.6f}")
for op in (to_rmsnorm, to_crmsnorm):
    converted, report = op(copy.deepcopy(model))
    logits, loss = evaluate(converted)
    err = ((logits - ref_logits).abs().max() / ref_logits.abs().max()).item()
    print(f"{op.__name__}: val loss {loss:.6f} (Δ {loss - ref_loss:+.2e}), max rel logit error "
          f"{err:.2e}, sites changed {len(report.changes)}")
