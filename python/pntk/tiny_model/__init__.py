"""The built-in model: a small Llama trained on a synthetic long-range corpus, shipped as
float weights (python/pntk/data/tiny_llama/, made once by scripts/train_tiny_model.py) and
written out as an airophin-style 4-bit GPTQ checkpoint by `pntk make-tiny-model`.

Like airophin (Llama-2, 4096 -> 16384 positions), it was trained at ORIGINAL_LENGTH with plain
RoPE, then briefly fine-tuned at EXTENDED_LENGTH with pntk (partial NTK) scaling, factor 4.
"""
from __future__ import annotations

from pathlib import Path

ORIGINAL_LENGTH = 256
SCALING_FACTOR = 4
EXTENDED_LENGTH = ORIGINAL_LENGTH * SCALING_FACTOR

# The float checkpoint shipped inside the package: a loadable fp16 Llama directory.
FLOAT_MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "tiny_llama"

# Llama-2's layout at a small size: 4 heads of rotary dim 32; every linear's K is a multiple of
# 32 (the GPTQ group size) and its N a multiple of 8 (the packing).
ARCHITECTURE = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=768,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    initializer_range=0.02,
)


def model_config() -> dict:
    """config.json of the model, in the airophin dialect: the extension is marked only by
    original_max_position_embeddings < max_position_embeddings (rope_scaling null)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **ARCHITECTURE,
        "max_position_embeddings": EXTENDED_LENGTH,
        "original_max_position_embeddings": ORIGINAL_LENGTH,
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "use_cache": True,
        "torch_dtype": "float16",
    }
