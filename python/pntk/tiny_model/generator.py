"""Write the built-in model as an airophin-style 4-bit GPTQ checkpoint.

Layout (what AutoGPTQ, ExLlama and Transformers look for in such a directory):
  config.json             Llama config; original_max_position_embeddings < max_position_embeddings
  quantize_config.json    bits 4, group_size 32, desc_act true, sym true, model_file_base_name "model"
  model.safetensors       per projection model.layers.N.{self_attn,mlp}.X_proj.{qweight,qzeros,scales,g_idx}
                          (GPTQ v1 packing, see DESIGN.md), everything else fp16
  tokenizer.model         sentencepiece (ExLlama reads this one), plus tokenizer.json,
                          tokenizer_config.json, special_tokens_map.json for Transformers
Deterministic: the float weights are the shipped ones and act-order permutations come from
a fixed seed per matrix, so two runs write identical bytes.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Optional

import torch

from . import FLOAT_MODEL_DIR
from .tokenizer import TOKENIZER_FILES

QUANTIZE_CONFIG = {
    "bits": 4,
    "group_size": 32,
    "damp_percent": 0.01,
    "desc_act": True,
    "sym": True,
    "true_sequential": True,
    "model_name_or_path": None,
    "model_file_base_name": "model",
}
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# 4-bit round-to-nearest with a group of 32 per scale: ||W_q - W|| / ||W|| is about 0.08 for
# these weights; a packing or permutation error would give ~1.
MAX_RELATIVE_ERROR = 0.15


def quantized_module_names(num_hidden_layers: int) -> list[str]:
    return [f"model.layers.{layer}.{projection}" for layer in range(num_hidden_layers) for projection in PROJECTIONS]


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())  # stable across runs and Python versions


def quantize_model(float_tensors: dict, num_hidden_layers: int) -> tuple[dict, dict]:
    """(checkpoint tensors, {module: relative error of the dequantized weight}).

    Each projection's float weight [N, K] (torch's Linear layout) is packed from W = weight.T
    [K, N] by pntk.quantize_gptq with act-order, then dequantized by pntk.Q4Matrix and compared
    with W; everything else is stored as fp16.
    """
    from .. import Q4Matrix, quantize_gptq

    tensors, errors = {}, {}
    quantized = set(quantized_module_names(num_hidden_layers))
    for name, tensor in float_tensors.items():
        module = name.rsplit(".", 1)[0]
        if module not in quantized:
            tensors[name] = tensor.to(torch.float16).contiguous()
            continue
        weight_kn = tensor.to(torch.float32).t().contiguous()
        packed = quantize_gptq(
            weight_kn,
            group_size=QUANTIZE_CONFIG["group_size"],
            act_order=QUANTIZE_CONFIG["desc_act"],
            sym=QUANTIZE_CONFIG["sym"],
            checkpoint_format="gptq",
            generator=torch.Generator().manual_seed(_seed(module)),
        )
        dequantized = Q4Matrix.from_gptq(**packed).dequantize(torch.float32)
        errors[module] = float((dequantized - weight_kn).norm() / weight_kn.norm())
        if not errors[module] <= MAX_RELATIVE_ERROR:
            raise ValueError(
                f"{module}: (quantization): relative error {errors[module]:.3f} of the 4-bit weight "
                f"exceeds {MAX_RELATIVE_ERROR}"
            )
        for key, value in packed.items():
            tensors[f"{module}.{key}"] = value.contiguous()
    missing = quantized - {name.rsplit(".", 1)[0] for name in float_tensors}
    if missing:
        raise ValueError(f"{FLOAT_MODEL_DIR / 'model.safetensors'}: (tensors): missing {sorted(missing)[0]}.weight")
    return tensors, errors


def make_tiny_model(directory, force: bool = False, log: Optional[Callable[[str], None]] = None) -> dict:
    """Write the checkpoint into `directory` (created; an existing one is replaced only with
    force=True). Built in a temporary directory beside it and renamed into place, so a failure
    leaves no partial checkpoint. Returns {module: relative quantization error}."""
    from safetensors.torch import load_file, save_file

    target = Path(directory)
    if target.exists() and not force:
        raise ValueError(f"{target}: (path): already exists (pass --force to replace it)")
    if target.exists() and not (target / "quantize_config.json").is_file():
        raise ValueError(f"{target}: (path): exists and is not a GPTQ model directory; not replacing it")
    source = FLOAT_MODEL_DIR
    config = json.loads((source / "config.json").read_text())
    float_tensors = load_file(str(source / "model.safetensors"))
    tensors, errors = quantize_model(float_tensors, config["num_hidden_layers"])

    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        (building / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (building / "quantize_config.json").write_text(json.dumps(QUANTIZE_CONFIG, indent=2) + "\n")
        # One metadata key: safetensors writes a map's keys in an order that varies per process.
        save_file(tensors, str(building / "model.safetensors"), metadata={"format": "pt"})
        for name in TOKENIZER_FILES:
            shutil.copyfile(source / name, building / name)
        for path in building.iterdir():
            os.chmod(path, 0o644)
        os.chmod(building, 0o755)
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, retired / "model")
            os.replace(building, target)
            shutil.rmtree(retired)
        else:
            os.replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if log:
        worst = max(errors, key=errors.get)
        log(f"wrote {target}: {len(errors)} GPTQ matrices (4-bit, group 32, act-order), "
            f"largest relative error {errors[worst]:.3f} ({worst})")
    return errors
