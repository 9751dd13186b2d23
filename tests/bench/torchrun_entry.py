"""`normlab` under torchrun, recording a digest of each rank's training batches.

Run as: torchrun --nproc_per_node 2 torchrun_entry.py train --preset smoke ...
The digests go to $NORMLAB_BATCH_LOG/rank<R>.txt so the test can check that ranks differ.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import standin

from normlab import cli
from normlab.bench import data, train

if not standin.real_models_available():
    train.build_model = standin.build

original = data.TextData.train_batch


def logged_batch(self, generator):
    batch = original(self, generator)
    log = Path(os.environ["NORMLAB_BATCH_LOG"]) / f"rank{os.environ['RANK']}.txt"
    with log.open("a") as handle:
        handle.write(hashlib.sha256(batch[0].numpy().tobytes()).hexdigest() + "\n")
    return batch


data.TextData.train_batch = logged_batch

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
