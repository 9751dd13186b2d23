"""Round trips with `transformers`: normlab's GPT and Llama as native HuggingFace models.

    from normlab.hf import to_hf, from_hf, export
    hf = to_hf(model)        # LlamaForCausalLM, Qwen3ForCausalLM, Olmo2ForCausalLM, GPT2LMHeadModel
    export(model, "out/")    # AutoModelForCausalLM.from_pretrained("out/"): the same logits
    model = from_hf("out/")
    config = config_from_hf("out/")  # its GPTConfig / LlamaConfig, no weights read

Needs the `hf` extra (transformers).
"""

from normlab.hf.convert import config_from_hf, export, family_of, from_hf, to_hf
from normlab.hf.families import FAMILIES, Family

__all__ = ["FAMILIES", "Family", "config_from_hf", "export", "family_of", "from_hf", "to_hf"]
