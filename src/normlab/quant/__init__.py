"""Fake quantization of the Linears, and the error it causes, on any `nn.Module`.

    from normlab.quant import QuantSpec, fake_quantized, quant_error
    spec = QuantSpec(w_bits=4, a_bits=8, w_granularity="channel", a_granularity="tensor")
    report = quant_error(model, spec, batches)     # per-Linear and output error
    with fake_quantized(model, spec):              # or run the quantized model yourself
        logits = model(batch)

`fake` holds the formula (symmetric, restricted range, min-max scales), `apply` swaps the
weights and hooks the inputs for the length of a `with` block, `error` measures. Migrating
activation scales into the weights first (`normlab.surgery.migrate_scales`) is the usual way
to make per-tensor activation quantization work where the norm's γ makes outlier channels.
"""

from normlab.quant.apply import fake_quantized, is_linear, quantizable
from normlab.quant.error import QuantReport, SiteError, default_output, quant_error, site_errors
from normlab.quant.fake import BITS, GRANULARITIES, QuantSpec, fake_quant, qmax

__all__ = [
    "BITS",
    "GRANULARITIES",
    "QuantReport",
    "QuantSpec",
    "SiteError",
    "default_output",
    "fake_quant",
    "fake_quantized",
    "is_linear",
    "qmax",
    "quant_error",
    "quantizable",
    "site_errors",
]
