"""Set before any test module is collected: without CUDA, Triton kernels run in its CPU
interpreter, and TRITON_INTERPRET must be set before anything imports triton (transformers'
model classes do), or normlab's kernels are decorated as compiled ones."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
