"""normlab's GPT at init: the diagnostics show what the placement papers report.

* "The Curse of Depth in Large Language Models" (Sun et al., NeurIPS 2025): under Pre-LN the
  residual-stream variance grows with depth; LayerNorm Scaling (1/√ℓ on each pre-norm output)
  slows the growth.
* "On Layer Normalization in the Transformer Architecture" (Xiong et al., ICML 2020) and
  "Understanding the Difficulty of Training Transformers" (Liu et al., EMNLP 2020): at init,
  Post-LN gradients are larger near the output and shrink toward the input; Pre-LN gradients
  are largest near the input. Xiong et al. analyze Xavier-initialized sublayers, so the
  gradient test re-initializes the block Linears that way (with the GPT's default N(0, 0.02)
  the Post-LN branches are so small that every block is almost the identity and the gradient
  profile is flat).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.diagnostics import diagnose

models = pytest.importorskip("normlab.models", reason="normlab.models (the GPT) is not available")


def report(placement: str, *, seed: int, xavier: bool = False):
    torch.manual_seed(seed)
    config = models.GPTConfig(depth=8, dim=32, heads=2, placement=placement, block_size=32)
    model = models.GPT(config).eval()
    if xavier:
        for module in model.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
    generator = torch.Generator().manual_seed(seed)
    x, y = (torch.randint(0, 256, (4, 32), generator=generator) for _ in range(2))
    return diagnose(model, [(x, y)], skip=False)


def test_blocks_and_norms_found():
    doc = report("pre", seed=0)
    assert [b["name"] for b in doc["blocks"]] == [f"blocks.{i}" for i in range(8)]
    assert len(doc["norms"]) == 2 * 8 + 1  # attn and mlp pre-norms, final norm
    assert all(n["kind"] == "layernorm" and n["stats"] == "token" for n in doc["norms"])


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_variance_grows_under_pre_and_much_less_under_lns(seed):
    growth = {}
    for placement in ("pre", "lns"):
        variance = [b["output"]["variance"] for b in report(placement, seed=seed)["blocks"]]
        growth[placement] = variance[-1] / variance[0]
        if placement == "pre":
            assert variance == sorted(variance), "Pre-LN: the variance grows block after block"
    assert growth["pre"] > 2.0
    assert growth["pre"] > 1.5 * growth["lns"]


@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_post_larger_near_output_pre_larger_near_input(seed):
    pre = report("pre", seed=seed, xavier=True)["blocks"]
    post = report("post", seed=seed, xavier=True)["blocks"]

    def ratio(blocks, key):  # last block over first block
        return blocks[-1]["grad"][key] / blocks[0]["grad"][key]
    assert ratio(post, "output_token_norm") > 1.1      # vanishing toward the input
    assert ratio(pre, "output_token_norm") < 0.75      # largest near the input
    assert ratio(pre, "params") < 0.75
    assert ratio(post, "output_token_norm") > 2 * ratio(pre, "output_token_norm")
