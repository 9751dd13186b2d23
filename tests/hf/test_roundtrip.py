"""Round trips with transformers: logits equal to transformers' own classes, both directions."""

from __future__ import annotations

import pytest
import torch

from normlab.models import GPT, GPTConfig, Llama, LlamaConfig

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def convert():
    """`normlab.hf`, imported when the tests run: transformers' model classes import triton,
    which must come after tests/kernels/test_triton.py sets TRITON_INTERPRET at collection."""
    import normlab.hf

    return normlab.hf

SHAPE = dict(vocab_size=48, block_size=24, depth=2, dim=32, heads=4)
# model_type -> (normlab class, config fields, native class name)
CASES = {
    "llama": (Llama, {}, "LlamaForCausalLM"),
    "qwen3": (Llama, {"qk_norm": "per_head"}, "Qwen3ForCausalLM"),
    "olmo2": (Llama, {"placement": "olmo2", "qk_norm": "across_heads"}, "Olmo2ForCausalLM"),
    "gpt2": (GPT, {}, "GPT2LMHeadModel"),
}
RTOL = 1e-5


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved off its init (norm gains ≠ 1, biases ≠ 0), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def normlab_model(model_type: str, tied: bool, kv_heads: int | None, seed: int = 0):
    cls, fields, _ = CASES[model_type]
    extra = {} if cls is GPT else {"kv_heads": kv_heads, "rope_theta": 500.0}
    config = (GPTConfig if cls is GPT else LlamaConfig)(
        **SHAPE, **fields, **extra, tie_embeddings=tied
    )
    torch.manual_seed(seed)
    return perturbed(cls(config), seed)


def tokens(b=2, t=20, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, SHAPE["vocab_size"], (b, t), generator=gen)


def assert_same_logits(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    scale = ours.abs().max()
    assert scale > 0.1  # not a vanishing signal
    assert (ours - theirs).abs().max() <= RTOL * scale, (ours - theirs).abs().max() / scale


VARIANTS = [
    pytest.param(t, tied, kv, id=f"{t}-{'tied' if tied else 'untied'}-kv{kv}")
    for t in CASES for tied in (True, False) for kv in ((None, 2, 1) if t != "gpt2" else (None,))
]


@pytest.mark.parametrize(("model_type", "tied", "kv_heads"), VARIANTS)
def test_export_loads_with_plain_auto_model(model_type, tied, kv_heads, tmp_path, convert):
    model = normlab_model(model_type, tied, kv_heads)
    convert.export(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors"
    ]  # no pickle (*.bin, *.pt)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == CASES[model_type][2]
    assert hf.config.tie_word_embeddings == tied
    assert next(hf.parameters()).dtype == torch.float32
    idx = tokens()
    with torch.no_grad():
        assert_same_logits(model(idx)[0], hf(idx).logits)
    if model_type != "gpt2":
        assert hf.config.num_key_value_heads == (kv_heads or 4)
        assert hf.config.rope_parameters["rope_theta"] == 500.0


@pytest.mark.parametrize(("model_type", "tied", "kv_heads"), VARIANTS)
def test_from_hf_of_a_native_model(model_type, tied, kv_heads, tmp_path, convert):
    """A randomly initialised transformers model, saved, comes back as normlab's model."""
    source = convert.to_hf(normlab_model(model_type, tied, kv_heads))  # the config only
    native = perturbed(type(source)(source.config), seed=3)
    native.save_pretrained(tmp_path)
    for model in (convert.from_hf(native), convert.from_hf(tmp_path)):
        assert isinstance(model, CASES[model_type][0])
        assert (model.lm_head.weight is model.wte.weight) == tied
        idx = tokens(seed=4)
        with torch.no_grad():
            assert_same_logits(model(idx)[0], native(idx).logits)
    volatile = {"architectures", "dtype", "transformers_version", "_name_or_path"}
    back, source = (
        {k: v for k, v in c.to_dict().items() if k not in volatile}
        for c in (convert.to_hf(model).config, native.config)
    )
    assert back == source


def test_numerics_carried_exactly(convert):
    model = normlab_model("qwen3", False, 2)
    for block in model.blocks:
        for norm in (*block.norm_slots().values(), block.attn.q_norm, block.attn.k_norm):
            norm.eps = 1e-5
    model.final_norm.eps = 1e-5
    hf = convert.to_hf(model)
    assert hf.config.rms_norm_eps == 1e-5 and hf.config.head_dim == 8
    assert hf.config.intermediate_size == model.config.mlp_hidden
    gpt = convert.to_hf(normlab_model("gpt2", True, None))
    assert gpt.config.activation_function == "gelu"  # exact GELU, not GPT-2's tanh "gelu_new"
    c_attn = gpt.transformer.h[0].attn.c_attn.weight  # Conv1D: (in, out)
    assert c_attn.shape == (32, 96)


@pytest.mark.parametrize(
    ("cls", "fields", "message"),
    [
        (Llama, {"placement": "lns"}, r"placement 'lns' \(y = x \+ F\(N\(x\)/√ℓ\)"),
        (Llama, {"placement": "olmo2"}, "placement 'olmo2'.*LlamaForCausalLM"),
        (Llama, {"qk_norm": "across_heads"}, "placement 'pre'.*Olmo2ForCausalLM"),
        (Llama, {"norm": "dyt"}, "norm 'dyt' at blocks.0.norms.attn_pre has no native"),
        (Llama, {"qk_norm": "per_head", "qk_norm_name": "layernorm"}, "attn.q_norm"),
        (Llama, {"norm_kwargs": {"eps_outside": True}}, "eps outside the root"),
        (Llama, {"norm_kwargs": {"bias": True}}, "RMSNorm's bias"),
        (Llama, {"embed_scale": 2.0}, "an embedding scale of 2"),
        (Llama, {"embed_gain_init": 2.0}, "embedding gain .* LlamaForCausalLM"),
        (GPT, {"norm": "rmsnorm"}, "norm 'rmsnorm' .* GPT2LMHeadModel"),
        (GPT, {"placement": "post"}, "placement 'post'"),
        (GPT, {"embed_gain_init": 2.0}, "embedding gain"),
        (GPT, {"qk_norm": "per_head"}, r"QK-norm \(per_head\) has no native equivalent"),
    ],
)
def test_refused_export_names_the_reason_and_writes_nothing(
    cls, fields, message, tmp_path, convert
):
    config = (GPTConfig if cls is GPT else LlamaConfig)(**SHAPE, **fields)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message) as error:
        convert.export(cls(config), out)
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_different_eps_are_refused(convert):
    model = normlab_model("llama", False, None)
    model.final_norm.eps = 1e-5
    with pytest.raises(ValueError, match="several eps"):
        convert.to_hf(model)


def test_from_hf_refuses_what_normlab_cannot_express(tmp_path, convert):
    bert = transformers.BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=4, intermediate_size=64)
    bert.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'bert' is not supported; supported: "
                       + ", ".join(convert.FAMILIES)):
        convert.from_hf(tmp_path)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=32, n_positions=16, n_embd=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="activation_function='gelu_new' has no normlab"):
        convert.from_hf(gpt2)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, attention_bias=True))
    with pytest.raises(ValueError, match="attention_bias=True"):
        convert.from_hf(llama)
    with pytest.raises(TypeError, match="to_hf converts a normlab GPT or Llama"):
        convert.to_hf(torch.nn.Linear(2, 2))
