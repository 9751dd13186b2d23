"""One typed configuration per run: the `RunConfig` schema and type-checked `a.b=value` overrides.

    cfg = from_dict(RunConfig, {"optim": {"lr": 3e-3}})
    set_field(cfg, "train.steps", 50)

Unknown keys and values of the wrong type raise `ValueError` naming the field (the typed
parsing is `normlab.configs`); `validate` checks the bench's own cross-field rules. Presets,
sweeps and the model's checks: `normlab.bench.presets`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from normlab import configs
from normlab.adapt import parse_include
from normlab.norms import get_norm_class


@dataclass
class ModelConfig:
    """The network: `gpt`, `llama` or `ngpt` (byte-level causal LMs) or `vit` (image classifier).

    `bias` and `embed_gain_init` are the GPT's only, `tie_embeddings` the GPT's and the Llama's;
    `patch_size`, `pool` and `dual_patchnorm` the ViT's; the fields from `mlp_multiple_of` on
    the Llama's (`normlab.models.LlamaConfig`: GQA, RoPE θ, QK-norm, init, embedding scale),
    `qk_norm` and `qk_norm_name` the GPT's too.
    `embed_gain_init` (None = off) starts a learnable scalar on the
    token embeddings (`GPTConfig.embed_gain_init`): DyT's LLaMA recipe, which lifts the
    N(0, 0.02) embedding stream into tanh's active range.
    `init_from` (None = random init) is a run directory (its latest checkpoint) or a
    `transformers` folder whose weights start the run (`normlab.bench.init_from`; `normlab
    train --init-from SOURCE` sets it and the architecture fields to the source's).
    """

    kind: Literal["gpt", "vit", "llama", "ngpt"] = "gpt"
    depth: int = 4
    dim: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    patch_size: int = 2
    pool: Literal["cls", "mean"] = "cls"
    dual_patchnorm: bool = False
    embed_gain_init: float | None = None
    mlp_multiple_of: int = 16
    kv_heads: int | None = None
    rope_theta: float = 10_000.0
    qk_norm: Literal["per_head", "across_heads"] | None = None
    qk_norm_name: str | None = None
    init_std: float = 0.02
    scale_out_proj_by_depth: bool = False
    embed_scale: float | Literal["sqrt_dim"] = 1.0
    init_from: str | None = None


@dataclass
class NormConfig:
    """The normalization: a name from `normlab.list_norms()`, its keyword arguments, and
    arguments by position ("attn", "mlp", "outside": `StackConfig.norm_kwargs_by_position`)."""

    name: str = "layernorm"
    kwargs: dict[str, Any] = field(default_factory=dict)
    kwargs_by_position: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class PlacementConfig:
    """Where the norms sit in each block (post, pre, peri, mix, lns, deepnorm, ...)."""

    name: str = "pre"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """The optimizer; weight decay only on matrices and embeddings (never on gains or biases).

    `name`: `adamw`, `adamp` / `sgdp` (the update's radial part removed on scale-invariant
    weights, `normlab.optim`; SGDP's momentum is `beta1`) or `adamw_nap` (AdamW with NaP's
    projection of every Linear weight to its initial norm after each step); see
    `normlab.bench.optim.make_optimizer`. `trainable`: which parameters train, `all` or parts
    joined by `+` from `norms`, `biases`, `head` (`normlab.adapt.norm_only`; the others are
    frozen).

    `grad_clip` is the global-norm clip (0 disables it). `agc` is the NFNet adaptive clipping
    factor λ (None disables it; 0.01 in the paper), applied per unit before the global clip
    and never to the final classifier / LM head. `gate_clip` (0 or None disables it; 0.01 in
    GPAS's 7B runs) clips one joint L2 norm over the gradients of all GPAS gates, after the
    global clip, as GPAS's `--clip_gate_grad` does. `z_loss` (0 = off; 1e-4 in PaLM and
    Wortsman et al. 2023) adds z_loss·mean((log Z)²) of the output logits to the training
    objective (`normlab.models.lm.z_loss`); the logged loss stays the cross-entropy.
    """

    name: Literal["adamw", "adamp", "sgdp", "adamw_nap"] = "adamw"
    trainable: str = "all"
    lr: float = 3e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    agc: float | None = None
    agc_eps: float = 1e-3
    gate_clip: float | None = 0.0
    z_loss: float = 0.0


@dataclass
class ScheduleConfig:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio * lr`."""

    warmup_steps: int = 10
    min_lr_ratio: float = 0.1


@dataclass
class DataConfig:
    """Where batches come from.

    `stdlib`: the bytes of the Python standard library's .py files (offline, no download);
    `path`: any text file or folder (`path`, files matching `glob`);
    `hf`: a HuggingFace `datasets` name (`hf_name`, `hf_config`, `hf_split`, `text_field`);
    `digits`: scikit-learn's 8x8 digits (for `model.kind = vit`).
    Text is split into train/validation by file (a stable hash of the relative path);
    `val_fraction` of the files go to validation. `tokenizer`: "bytes" (one token per byte,
    vocabulary 256), "bpe" (a byte-level BPE of `vocab_size` tokens trained on the training
    split and cached), or a `tokenizer.json` / a folder holding one (a transformers folder's).
    """

    source: Literal["stdlib", "path", "hf", "digits"] = "stdlib"
    path: str | None = None
    glob: str = "**/*"
    hf_name: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    text_field: str = "text"
    seq_len: int = 128
    batch_size: int = 16
    val_fraction: float = 0.05
    cache_dir: str | None = None
    tokenizer: str = "bytes"
    vocab_size: int = 4096


@dataclass
class TrainConfig:
    """The loop: how long, how often to evaluate and checkpoint, and when a run has diverged.

    A run diverges when the training loss is NaN/Inf, or exceeds both `spike_threshold` times
    the running minimum of the training loss and the first step's loss (0 disables the spike
    test). `diagnose_every` > 0
    records the cheap diagnostics (bench/diagnostics.py) on the training batch every that many
    steps and at the last step, into diagnostics.jsonl; 0 turns them off.
    """

    steps: int = 100
    eval_every: int = 25
    eval_batches: int = 8
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    spike_threshold: float = 4.0
    parallel: Literal["ddp", "fsdp"] = "ddp"
    diagnose_every: int = 0


@dataclass
class RunConfig:
    """Everything one training run depends on; saved as config.json in the run directory.

    `recipes` maps a norm name to the model and norm fields its paper sets for this kind of
    model, e.g. {"dyt": {"model.embed_gain_init": 8.0, "norm.kwargs": {"alpha_init": 1.0}}}:
    an arm whose `norm.name` is a key builds its model with those values (`with_recipe`).
    Keys are `model.<field>`, `norm.kwargs` and `norm.kwargs_by_position`.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build the dataclass `cls` from nested dicts, type-checking every leaf (see
    `normlab.configs`); a `RunConfig` is also checked by `validate`."""
    cfg = configs.from_dict(cls, data, prefix)
    return validate(cfg) if cls is RunConfig else cfg


RECIPE_FIELDS = ("norm.kwargs", "norm.kwargs_by_position",
                 *(f"model.{f.name}" for f in dataclasses.fields(ModelConfig)
                   if f.name not in ("kind", "init_from")))


def with_recipe(cfg: RunConfig) -> RunConfig:
    """A copy of `cfg` with the recipe of its norm (`cfg.recipes[cfg.norm.name]`) applied."""
    recipe = cfg.recipes.get(cfg.norm.name.lower(), {})
    if not recipe:
        return cfg
    out = configs.from_dict(RunConfig, cfg.to_dict())
    for key, value in recipe.items():
        configs.set_field(out, key, value)
    return out


def _check_recipes(recipes: dict[str, dict[str, Any]]) -> None:
    for norm, recipe in recipes.items():
        if norm != norm.lower():
            raise ValueError(f"recipes: norm names are lower case; write {norm.lower()!r}")
        get_norm_class(norm)  # ValueError listing the known names
        if not isinstance(recipe, dict):
            raise ValueError(f"recipes.{norm} must map fields to values, got {recipe!r}")
        for key, value in recipe.items():
            if key not in RECIPE_FIELDS:
                raise ValueError(f"recipes.{norm}: {key!r} cannot be set by a recipe; "
                                 "a recipe sets model.<field>, norm.kwargs or "
                                 "norm.kwargs_by_position")
            configs.set_field(RunConfig(), key, value)  # type-checks the value


def validate(cfg: RunConfig) -> RunConfig:
    """Check the bench's own cross-field rules that types alone cannot express.

    The model's facts (depth, width, heads, the norm and placement names and their options)
    are checked where they are defined, by the model config (`normlab.bench.model`), which
    `normlab.bench.presets` builds for every arm at config time.
    """
    positive = {
        "data.seq_len": cfg.data.seq_len, "data.batch_size": cfg.data.batch_size,
        "train.steps": cfg.train.steps, "train.eval_every": cfg.train.eval_every,
        "train.eval_batches": cfg.train.eval_batches, "train.log_every": cfg.train.log_every,
        "train.checkpoint_every": cfg.train.checkpoint_every, "optim.lr": cfg.optim.lr,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    _check_recipes(cfg.recipes)
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
    if cfg.schedule.warmup_steps < 0 or not 0.0 <= cfg.schedule.min_lr_ratio <= 1.0:
        raise ValueError("schedule.warmup_steps must be >= 0 and schedule.min_lr_ratio in [0, 1]")
    if cfg.train.spike_threshold < 0 or cfg.optim.grad_clip < 0:
        raise ValueError("train.spike_threshold and optim.grad_clip must be >= 0 (0 disables)")
    if cfg.optim.agc is not None and cfg.optim.agc <= 0:
        raise ValueError(f"optim.agc must be positive or null, got {cfg.optim.agc}")
    if not cfg.optim.z_loss >= 0:
        raise ValueError(f"optim.z_loss must be >= 0 (0 turns it off), got {cfg.optim.z_loss}")
    if cfg.optim.gate_clip is not None and not cfg.optim.gate_clip >= 0:
        raise ValueError(f"optim.gate_clip must be >= 0 or null (0 and null turn it off), "
                         f"got {cfg.optim.gate_clip}")
    if cfg.train.diagnose_every < 0:
        raise ValueError(f"train.diagnose_every must be >= 0 (0 turns the diagnostics off), "
                         f"got {cfg.train.diagnose_every}")
    if cfg.optim.trainable != "all":
        parse_include(cfg.optim.trainable)
    if cfg.train.keep_checkpoints < 1:
        raise ValueError("train.keep_checkpoints must be at least 1")
    image = cfg.model.kind == "vit"
    if image != (cfg.data.source == "digits"):
        raise ValueError("model.kind 'vit' goes with data.source 'digits' and 'gpt' with a text "
                         f"source; got model.kind={cfg.model.kind!r}, "
                         f"data.source={cfg.data.source!r}")
    if cfg.data.source == "path" and not cfg.data.path:
        raise ValueError("data.source 'path' needs data.path (a text file or a folder)")
    if cfg.data.tokenizer == "bpe" and cfg.data.vocab_size < 257:
        raise ValueError(f"data.vocab_size must exceed the 256 bytes a byte-level BPE starts "
                         f"from, got {cfg.data.vocab_size}")
    if cfg.data.source == "hf" and not cfg.data.hf_name:
        raise ValueError("data.source 'hf' needs data.hf_name (a HuggingFace datasets name)")
    return cfg
