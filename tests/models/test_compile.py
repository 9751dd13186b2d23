"""torch.compile(fullgraph=True): the dispatch norms and the LMs built on them trace into one
graph and give the eager outputs and gradients (the "auto" backend uses the plain formulas
while compiling)."""

from __future__ import annotations

import pytest
import torch

import normlab
from normlab import kernels

DISPATCH_NORMS = ("layernorm", "rmsnorm", "dyt")


def grads(module: torch.nn.Module, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters() if p.grad is not None] + \
        [x.grad.clone() for x in inputs if x.requires_grad]


@pytest.mark.parametrize("name", DISPATCH_NORMS)
def test_dispatch_norm_compiles_fullgraph_and_matches_eager(name):
    torch.manual_seed(0)
    norm = normlab.make_norm(name, 32).train()
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 5, 32, requires_grad=True)
    eager = norm(x)
    eager.square().sum().backward()
    expected = grads(norm, x)
    norm.zero_grad()
    x.grad = None
    torch._dynamo.reset()
    compiled = torch.compile(norm, fullgraph=True)(x)
    compiled.square().sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads(norm, x), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_auto_backend_is_the_formula_only_while_compiling(monkeypatch):
    x = torch.randn(4, 16)
    assert kernels.dispatch._resolve("rms_norm", "auto", x) in ("cpp", "torch")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert kernels.dispatch._resolve("rms_norm", "auto", x) == "reference"


@pytest.mark.parametrize("build", [
    lambda: normlab.GPT(normlab.GPTConfig(depth=2, dim=32, heads=2, norm="rmsnorm",
                                          block_size=16, qk_norm="per_head")),
    lambda: normlab.Llama(normlab.LlamaConfig(depth=2, dim=32, heads=2, kv_heads=1, norm="dyt",
                                              qk_norm="across_heads")),
    lambda: normlab.Llama(normlab.LlamaConfig(depth=2, dim=32, heads=4, kv_heads=2,
                                              norm="layernorm", placement="olmo2")),
], ids=["gpt-rmsnorm-qk-per-head", "llama-dyt-qk-across-heads", "llama-layernorm-olmo2"])
def test_language_models_compile_fullgraph_and_match_eager(build):
    torch.manual_seed(0)
    model = build()
    idx = torch.randint(0, 256, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    expected = grads(model)
    model.zero_grad()
    torch._dynamo.reset()
    _, compiled_loss = torch.compile(model, fullgraph=True, backend="aot_eager")(idx, idx)
    compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads(model), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
