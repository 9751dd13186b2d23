"""The adapter of every HuggingFace model that no hand-written adapter claims: its layout is
read from one traced probe forward (`structure.py`), so a decoder, an encoder or an
encoder-decoder needs no file of module names.

The probe batch, on the model's device (pixels in its dtype), follows its `main_input_name`:
pixels (batch 2, the config's channels and image size) or token ids uniform over the
vocabulary, 2 × 11 (11: a length no hidden width is likely to equal; batch 1 for a sequence
classifier without a pad token, which cannot pool a batch), plus decoder ids for an
encoder-decoder and `use_cache=False` where the forward takes it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from normlab.surgery.adapters.base import Adapter, Layout
from normlab.surgery.adapters.structure import read_layout
from normlab.surgery.adapters.trace import record

SEQ = 11


def model_output(out: Any) -> Tensor:
    """The tensor an equivalence is measured on: `logits`, else `last_hidden_state`, of a
    ModelOutput or mapping; the first tensor of a tuple (normlab's (logits, loss)); a tensor."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "keys"):
        for name in ("logits", "last_hidden_state"):
            if name in out and isinstance(out[name], Tensor):
                return out[name]
        raise TypeError(
            f"the probe compares logits or last_hidden_state; {type(out).__name__} has "
            f"neither (keys: {', '.join(out.keys())})"
        )
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"the probe needs a tensor or a ModelOutput, got {type(out).__name__}")


class TracedAdapter(Adapter):
    name = "traced"

    def label(self) -> str:
        return "any HuggingFace model, its layout traced from a probe forward"

    def claims(self, model: nn.Module) -> bool:
        return getattr(getattr(model, "config", None), "model_type", None) is not None

    def layout(self, model: nn.Module, inputs: Any = None) -> Layout:
        from normlab.surgery.select import norm_modules
        from normlab.surgery.translate import read_norm

        norms = {}
        kinds = {}
        for path in norm_modules(model):
            params = read_norm(model.get_submodule(path))
            norms[path], kinds[path] = params.dim, params.kind
        try:
            if inputs is None:
                inputs = self.probe_inputs(model, torch.Generator().manual_seed(0))
            trace, _ = record(model, inputs if isinstance(inputs, dict) else {
                getattr(model, "main_input_name", "input_ids"): inputs})
        except (AttributeError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise ValueError(
                f"surgery reads the structure of {type(model).__name__} from a probe forward, "
                f"which failed ({type(err).__name__}: {err}); pass probe= inputs its forward "
                f"accepts"
            ) from None
        arch = f"{model.config.model_type} ({type(model).__name__})"
        return read_layout(model, trace, norms, kinds, arch)

    def probe_inputs(self, model: nn.Module, generator: torch.Generator) -> dict[str, Any]:
        config = model.config
        text = getattr(config, "get_text_config", lambda: config)()
        weight = next(model.parameters(), None)
        device = None if weight is None else weight.device
        dtype = None if weight is None else weight.dtype
        if getattr(model, "main_input_name", "input_ids") == "pixel_values":
            size = (2, config.num_channels, config.image_size, config.image_size)
            pixels = torch.randn(size, generator=generator)
            return {"pixel_values": pixels.to(device=device, dtype=dtype)}
        pooled = type(model).__name__.endswith("ForSequenceClassification")
        batch = 1 if pooled and getattr(text, "pad_token_id", None) is None else 2
        ids = torch.randint(0, text.vocab_size, (batch, SEQ), generator=generator)
        inputs: dict[str, Any] = {"input_ids": ids.to(device=device)}
        if getattr(config, "is_encoder_decoder", False):
            inputs["decoder_input_ids"] = torch.randint(
                0, text.vocab_size, (batch, SEQ - 4), generator=generator).to(device=device)
        if "use_cache" in inspect.signature(model.forward).parameters:
            inputs["use_cache"] = False
        return inputs

    def output(self, model: nn.Module, inputs: Any) -> Tensor:
        return model_output(model(**inputs) if isinstance(inputs, dict) else model(inputs))

    def untie(self, model: nn.Module) -> None:
        model.config.tie_word_embeddings = False
        text = getattr(model.config, "get_text_config", None)
        if text is not None:
            text().tie_word_embeddings = False


TRACED = TracedAdapter()
