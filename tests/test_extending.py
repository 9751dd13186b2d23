"""The "How to add" sections of docs/norms.md, docs/placements.md and docs/surgery.md, followed
to the letter: a norm, a placement scheme and a HuggingFace adapter, each registered only for
the test (the registries' `temporary()` restores them) and then used through the public API."""

from __future__ import annotations

import math

import pytest
import torch
from tests.norms import test_contract as contract
from torch import Tensor, nn

from normlab import (
    GPT,
    SCHEMES,
    GPTConfig,
    Placement,
    get_norm_class,
    list_norms,
    make_norm,
    register_norm,
    register_scheme,
)
from normlab.blocks import Layout
from normlab.diagnostics import Recorder, summarize
from normlab.norms import NORMS, Norm, NormInfo, Squash
from normlab.norms.base import affine_params
from normlab.surgery import swap_norms
from normlab.surgery.adapters import (
    ADAPTERS,
    HFAdapter,
    HFSpec,
    NormSite,
    Port,
    find_adapter,
    linears,
    register_adapter,
    supported,
)


@pytest.fixture
def registries():
    """Every registry as it was before the test, whatever the test registers."""
    before = [dict(r) for r in (NORMS, SCHEMES, ADAPTERS)]
    with NORMS.temporary(), SCHEMES.temporary(), ADAPTERS.temporary():
        yield
    assert [dict(r) for r in (NORMS, SCHEMES, ADAPTERS)] == before


def define_norm() -> type[Norm]:
    @register_norm("TanhScale")
    class TanhScale(Norm):
        """Tanh with a learnable input scale and no shift: y = γ ⊙ tanh(s·x).

        Args:
            dim: channels C.
            scale_init: s₀, the initial input scale (1: tanh's own slope at 0).
            affine: learn γ (ones).
            eps: accepted for the common norm constructor and unused.

        A bias-free DyT ("Transformers without Normalization", Zhu et al., CVPR 2025), written
        here as an example of a new elementwise norm.
        """

        info = NormInfo(
            family="elementwise", stats="none", fold="affine",
            paper="Transformers without Normalization (Zhu, Chen, He, LeCun, Liu, CVPR 2025)",
            scalars=("scale",), squash=Squash("tanh", gain="scale"),
        )

        def __init__(self, dim: int, *, scale_init: float = 1.0, eps: float = 0.0,
                     affine: bool = True, device=None, dtype=None) -> None:
            super().__init__(dim, eps=eps, affine=affine)
            self.scale = nn.Parameter(torch.full((), float(scale_init), device=device,
                                                 dtype=dtype))
            affine_params(self, dim, bias=False, device=device, dtype=dtype)

        def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
            y = torch.tanh(self.scale.to(x.dtype) * x)
            return y if self.weight is None else y * self.weight.to(x.dtype)

    return TanhScale


def define_scheme() -> None:
    @register_scheme(
        "outnorm", formula="y = x + N(F(x)); final norm",
        paper="OLMo 2's reordered norm (Team OLMo, 2024)",
    )
    def _outnorm(depth: int, architecture: str, *, final: bool = True) -> Layout:
        block = Placement(attn=("branch_out",), mlp=("branch_out",))
        return Layout((block,) * depth, final_norm=bool(final))


def define_adapter() -> None:
    register_adapter(HFAdapter(HFSpec(
        model_type="qwen2",
        classes={"Qwen2Model": ("", None), "Qwen2ForCausalLM": ("model.", "lm_head")},
        layers="layers",
        num_layers="num_hidden_layers",
        norms=(
            NormSite("input_layernorm", "pre",
                     linears("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
            NormSite("post_attention_layernorm", "pre",
                     linears("mlp.gate_proj", "mlp.up_proj")),
        ),
        writers=linears("self_attn.o_proj", "mlp.down_proj"),
        embeddings=(Port("embed_tokens", "embedding"),),
        final_norm="norm",
        tied="embed_tokens",
        convert_refusal="qwen2 already normalizes with RMSNorm",
        kv_cache=True,
    )))


def test_a_new_norm_passes_the_contract_and_reaches_every_user(registries):
    cls = define_norm()
    assert "tanhscale" in list_norms() and get_norm_class("TANHSCALE") is cls
    assert isinstance(make_norm("tanhscale", 8, scale_init=0.3), cls)
    name = "tanhscale"
    contract.test_declares_facts(name)
    contract.test_declared_scalars_and_squash(name)
    contract.test_gradcheck_fp64(name, masked=False)
    contract.test_half_precision_uses_fp32_statistics(name, torch.float16, "float32")
    contract.test_output_depends_on_input(name, "train")
    contract.test_any_leading_shape(name, (2, 3, 4, 33))
    contract.test_state_dict_round_trip(name)
    contract.test_train_and_eval(name)
    contract.test_fold_claim(name)
    contract.test_constructor_places_parameters(name)
    contract.test_bad_inputs_raise_clear_errors(name)

    # a model takes it by name, with arguments by position; diagnostics record its scalar
    by_position = {"attn": {"scale_init": 2.0}, "outside": {"scale_init": 0.5}}
    config = GPTConfig(depth=2, dim=16, heads=2, block_size=8, norm="tanhscale",
                       norm_kwargs_by_position=by_position)
    model = GPT(config)
    assert model.blocks[0].norms["attn_pre"].scale.item() == 2.0
    assert model.blocks[0].norms["mlp_pre"].scale.item() == 1.0
    idx = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    with Recorder(model) as recorder:
        model(idx, idx)[1].backward()
    final = next(n for n in summarize(recorder.recording)["norms"] if n["name"] == "final_norm")
    assert final["dyt"]["scale"] == 0.5 and 0.0 <= final["dyt"]["saturation"] <= 1.0


def test_a_new_scheme_builds_and_trains_a_gpt(registries):
    define_scheme()
    assert "outnorm" in SCHEMES and SCHEMES["outnorm"].options() == {"final": True}
    model = GPT(GPTConfig(depth=3, dim=16, heads=2, block_size=8, placement="outnorm",
                          norm="rmsnorm"))
    assert model.layout.scheme == "outnorm" and model.final_norm is not None
    assert set(model.blocks[1].norm_slots()) == {"attn_branch_out", "mlp_branch_out"}
    idx = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    _, loss = model(idx, idx)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="accepted: final"):
        GPTConfig(placement="outnorm", placement_kwargs={"alpha": 1.0})


def test_a_new_adapter_lets_surgery_swap_a_model_it_claims(registries):
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2Config(
        vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config).eval()
    assert find_adapter(model) is None
    define_adapter()
    assert "HuggingFace model_type 'qwen2'" in supported()
    assert find_adapter(model) is ADAPTERS["qwen2"]
    model, report = swap_norms(model, "rmsnorm")
    assert report.exact and len(report.changes) == 2 * 2 + 1
    assert report.max_rel_error < 1e-5
    assert all(type(model.get_submodule(c.path)).__name__ == "RMSNorm" for c in report.changes)
