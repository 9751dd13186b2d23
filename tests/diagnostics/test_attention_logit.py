"""The largest attention logit per block: against a loop over pairs, in the Recorder, and
capped by QK-norm."""

from __future__ import annotations

import math

import pytest
import torch

from normlab.diagnostics import Recorder, summarize
from normlab.diagnostics.attention import layer_max_logit, max_attention_logit
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig

GEN = torch.Generator().manual_seed(0)


def _reference(q, k, causal, mask):
    best = -math.inf
    b, h, t, d = q.shape
    for n in range(b):
        for head in range(h):
            for i in range(t):
                for j in range(t):
                    real = mask is None or (mask[n, i] and mask[n, j])
                    if real and (not causal or j <= i):
                        best = max(best, float(q[n, head, i] @ k[n, head, j]) / math.sqrt(d))
    return best


@pytest.mark.parametrize("causal", [True, False])
def test_the_largest_logit_over_the_allowed_pairs(causal):
    attention = GPT(GPTConfig(vocab_size=16, block_size=8, depth=1, dim=8, heads=2)).blocks[0].attn
    attention.causal = causal
    x = torch.randn(2, 6, 8, generator=GEN)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    for m in (None, mask):
        with torch.no_grad():
            q, k, _ = attention.qkv(x, m)
        assert layer_max_logit(attention, x, m) == pytest.approx(
            _reference(q, k, causal, m), rel=1e-5)


def test_a_masked_pair_never_counts():
    q = torch.zeros(1, 1, 2, 4)
    k = torch.zeros(1, 1, 2, 4)
    q[..., 0, :], k[..., 1, :] = 10.0, 10.0  # the only large product: query 0 with key 1
    causal = torch.ones(2, 2, dtype=torch.bool).tril()
    assert max_attention_logit(q, k, None) == pytest.approx(10 * 10 * 4 / math.sqrt(4))
    assert max_attention_logit(q, k, causal) == 0.0


def _recorded(model, idx):
    with Recorder(model, max_tokens=64) as recorder:
        model(idx)
    return [b["max_attention_logit"] for b in summarize(recorder.recording)["blocks"]]


@pytest.mark.parametrize("qk_norm", [None, "per_head"])
def test_qk_norm_caps_the_logit_that_grows_with_the_query_weights(qk_norm):
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=32, block_size=16, depth=2, dim=32, heads=4,
                              qk_norm=qk_norm))
    idx = torch.randint(0, 32, (2, 12), generator=GEN)
    before = _recorded(model, idx)
    assert len(before) == 2 and all(v is not None for v in before)
    with torch.no_grad():  # block 1 only: its input, the embeddings, stays the same
        model.blocks[0].attn.q_proj.weight.mul_(100.0)
    after = _recorded(model, idx)
    if qk_norm is None:
        assert after[0] == pytest.approx(100.0 * before[0], rel=1e-4)  # linear in W_q
    else:
        assert after[0] == pytest.approx(before[0], rel=1e-3)  # RMSNorm(100·q) = RMSNorm(q)
