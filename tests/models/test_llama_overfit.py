"""Every scheme × (layernorm, rmsnorm, dyt) trains the Llama: it overfits one tiny batch.

The Llama's blocks are the GPT's `Block` with rotary grouped-query attention (QK-norm on) and
a SwiGLU MLP; the matrix and the criterion are the GPT's (`test_overfit_matrix`); HybridNorm
brings its own per-head QKV-norm. Every scheme
runs by default with RMSNorm (the Llama's norm); the other norms are marked slow.
"""

from __future__ import annotations

import pytest
import torch
from tests.models.test_overfit_matrix import GPT_LR, MATRIX, has_norms, overfit

from normlab.models import Llama, LlamaConfig

LLAMA_MATRIX = [
    pytest.param(s, n, marks=() if n == "rmsnorm" or not has_norms(s) else pytest.mark.slow)
    for s, n in MATRIX
]


@pytest.mark.parametrize(("scheme", "norm"), LLAMA_MATRIX)
def test_llama_overfits_a_tiny_batch(scheme, norm):
    torch.manual_seed(0)
    qk_norm = None if scheme == "hybridnorm" else "per_head"  # its QKV-norm includes q and k
    model = Llama(LlamaConfig(vocab_size=32, block_size=16, depth=2, dim=32, heads=4, kv_heads=2,
                              qk_norm=qk_norm, norm=norm, placement=scheme))
    gen = torch.Generator().manual_seed(1)
    idx, targets = (torch.randint(0, 32, (4, 16), generator=gen) for _ in range(2))
    first, end = overfit(model, GPT_LR, idx, targets)
    assert end < 0.5 * first, (first, end)
