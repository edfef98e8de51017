"""Config builders shared by the export tests: small Llama configs, one per RoPE method."""
from __future__ import annotations

import json
import os

import numpy as np


def llama_config(head_dim: int, heads: int = 2, **fields) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": head_dim * heads,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "intermediate_size": 4 * head_dim,
        "num_hidden_layers": 2,
        "vocab_size": 96,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    }
    config.update(fields)
    return config


def random_static_config(method: str, rng: np.random.Generator) -> dict:
    """A config of `method` (one factors can express) with random dims, base and lengths."""
    head_dim = int(rng.choice([64, 80, 96, 100, 128]))
    theta = float(rng.choice([10000.0, 500000.0, float(rng.integers(5000, 2_000_000))]))
    original = int(rng.choice([256, 2048, 4096, 8192]))
    factor = int(rng.integers(2, 9))
    fields = {"rope_theta": theta}
    if method == "pntk":
        # airophin: only the top-level original length marks the extension; s = max // original.
        fields.update(original_max_position_embeddings=original,
                      max_position_embeddings=original * factor + int(rng.integers(0, original)))
    elif method == "linear":
        fields.update(max_position_embeddings=original * factor, rope_scaling={"type": "linear", "factor": factor})
    elif method == "ntk":
        fields.update(max_position_embeddings=original,
                      rope_scaling={"type": "ntk", "factor": float(np.round(rng.uniform(1.5, 8), 3))})
    elif method == "yarn":
        yarn = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
        fields.update(max_position_embeddings=original * factor, rope_scaling=yarn)
    elif method == "llama3":
        fields.update(max_position_embeddings=original * factor,
                      rope_scaling={"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": original})
    else:
        raise ValueError(method)
    return llama_config(head_dim, **fields)


def write_model_dir(path, config: dict) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as stream:
        json.dump(config, stream, indent=2)
    return str(path)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Units in the last place between positive fp32 arrays (their bit patterns are ordered)."""
    a = np.asarray(a, dtype=np.float32).view(np.int32).astype(np.int64)
    b = np.asarray(b, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.abs(a - b)
