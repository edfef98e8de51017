"""Load a Llama model directory into Transformers 5 on the CPU, with pntk's RoPE tables.

A GPTQ directory (quantize_config.json, or config.json with quantization_config) becomes a
LlamaForCausalLM whose q/k/v/o/gate/up/down projections are Q4Linear modules running pntk's
4-bit matmul (pntk.load_gptq), the other weights (embeddings, norms, lm_head) read from the
safetensors shards; a float directory is loaded by Transformers itself. Either way the rotary
embedding is swapped for pntk's (pntk.integrations.transformers.apply), so the RoPE plan comes
from config.json through the core.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch

from ..rope import RopePlan
from . import transformers as pntk_transformers
from .q4_linear import Q4Linear

GPTQ_TENSOR_KEYS = ("qweight", "qzeros", "scales", "g_idx", "bias")


def read_config(model_dir: Union[str, Path]) -> dict:
    """config.json of a model directory as a dict (ValueError naming the file if unreadable)."""
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise ValueError(f"{model_dir}: (path): not a model directory")
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: (path): not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: (file): cannot be read as JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: (file): must hold a JSON object")
    if config.get("model_type") != "llama":
        raise ValueError(f"{path}: model_type: must be \"llama\", got {config.get('model_type')!r}")
    return config


def is_gptq(model_dir: Union[str, Path]) -> bool:
    directory = Path(model_dir)
    return (directory / "quantize_config.json").is_file() or "quantization_config" in read_config(directory)


def _float_tensors(directory: Path, skip_modules: set, dtype: torch.dtype) -> dict:
    """Every tensor of the safetensors shards except the GPTQ parts of `skip_modules`, in dtype."""
    from safetensors import safe_open

    tensors = {}
    for shard in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(shard), framework="pt") as f:
                for name in f.keys():
                    module, _, key = name.rpartition(".")
                    if module in skip_modules and key in GPTQ_TENSOR_KEYS:
                        continue
                    tensors[name] = f.get_tensor(name).to(dtype)
        except (OSError, RuntimeError, ValueError) as exc:  # safetensors' errors on a bad file
            raise ValueError(f"{shard}: (file): not a readable safetensors file: {exc}") from None
    return tensors


def load_gptq_llama(model_dir: Union[str, Path], *, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """LlamaForCausalLM with Q4Linear projections (no RoPE swap yet: see load_llama)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .. import load_gptq

    directory = Path(model_dir)
    read_config(directory)
    matrices = load_gptq(directory)
    config = LlamaConfig.from_pretrained(directory)
    with torch.device("meta"):  # no memory for the float projections that Q4Linear replaces
        model = LlamaForCausalLM(config)
    for name, matrix in matrices.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{directory}: {name}.qweight: the model (config.json) has no such module") from None
        if (linear.in_features, linear.out_features) != (matrix.in_features, matrix.out_features):
            raise ValueError(
                f"{directory}: {name}.qweight: holds a {matrix.in_features}x{matrix.out_features} matrix, "
                f"config.json implies {linear.in_features}x{linear.out_features}"
            )
        model.set_submodule(name, Q4Linear(matrix))
    tensors = _float_tensors(directory, set(matrices), dtype)
    if config.tie_word_embeddings and "lm_head.weight" not in tensors and "model.embed_tokens.weight" in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]  # one tensor for both
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [name for name in missing if ".rotary_emb." not in name]
    if missing or unexpected:
        name, what = (missing[0], "missing") if missing else (unexpected[0], "not part of a Llama model")
        raise ValueError(f"{directory}: {name}: {what} in the safetensors files")
    still_meta = [name for name, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise ValueError(f"{directory}: {still_meta[0]}: missing in the safetensors files")
    # The rotary embedding's own buffers are never used: apply() swaps the module for pntk's.
    model.model.rotary_emb.to_empty(device="cpu")
    return model.eval()


def load_llama(
    model_dir: Union[str, Path],
    *,
    plan: Optional[RopePlan] = None,
    announce: bool = True,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.nn.Module, RopePlan]:
    """(model, plan): a GPTQ or float Llama directory on the CPU with pntk's RoPE tables.

    The plan is `plan`, else the one config.json asks for; its report line is printed unless
    announce=False.
    """
    directory = Path(model_dir)
    if is_gptq(directory):
        model = load_gptq_llama(directory, dtype=dtype)
    else:
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(directory, dtype=dtype).eval()
    if plan is None:
        plan = RopePlan.from_config(directory)
    pntk_transformers.apply(model, plan=plan, announce=announce)
    return model, plan
