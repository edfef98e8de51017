"""GPTQ checkpoints: the project's own round-to-nearest GPTQ packer (test data, tiny models)
and load_gptq, which reads a model directory into pntk.Q4Matrix objects.

Format (DESIGN.md): qweight int32 [K/8, N] (row k at bits 4*(k%8) of word k/8), qzeros int32
[G, N/8] (column n at bits 4*(n%8)), scales fp16 [G, N], g_idx int32 [K];
W = scale * (q - zero), zero = (stored + 1) & 15 for "gptq" (v1), stored for "gptq_v2".
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional

import torch

from ._core import ConfigError
from .q4 import Q4Matrix

__all__ = ["quantize_gptq", "pack_rows", "pack_columns", "save_gptq_checkpoint", "load_gptq"]

FORMATS = ("gptq", "gptq_v2")


def pack_rows(q: torch.Tensor) -> torch.Tensor:
    """int [K, N] values 0..15 -> int32 [K/8, N]: row k at bits 4*(k%8) of word k/8."""
    k, n = q.shape
    nibbles = q.to(torch.int64).reshape(k // 8, 8, n)
    shifts = (4 * torch.arange(8, dtype=torch.int64)).reshape(1, 8, 1)
    return _to_int32((nibbles << shifts).sum(dim=1))


def pack_columns(z: torch.Tensor) -> torch.Tensor:
    """int [G, N] values 0..15 -> int32 [G, N/8]: column n at bits 4*(n%8) of word n/8."""
    g, n = z.shape
    nibbles = z.to(torch.int64).reshape(g, n // 8, 8)
    shifts = (4 * torch.arange(8, dtype=torch.int64)).reshape(1, 1, 8)
    return _to_int32((nibbles << shifts).sum(dim=2))


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 values held in int64 -> the same bits as int32."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def quantize_gptq(
    weight_kn: torch.Tensor,
    group_size: int = 32,
    act_order: bool = False,
    sym: bool = True,
    checkpoint_format: str = "gptq",
    generator: Optional[torch.Generator] = None,
) -> dict:
    """Round-to-nearest GPTQ quantization of W [K, N] -> dict(qweight, qzeros, scales, g_idx).

    group_size: rows per group (a divisor of K) or -1 for one group. act_order: rows are
    assigned to groups in a random order (drawn from `generator`), as GPTQ's desc_act does,
    so g_idx is not sorted. Per group and column, as GPTQ's quantizer: symmetric: scale
    2*max|w|/15, zero 8; asymmetric: scale (max - min)/15 (range widened to include 0), zero
    round(-min/scale). Scales are stored in fp16 and q = clamp(round(w/scale) + zero, 0, 15)
    uses the fp16 scale.
    """
    if checkpoint_format not in FORMATS:
        raise ValueError(f"checkpoint_format: must be one of {FORMATS}, got {checkpoint_format!r}")
    w = weight_kn.to(torch.float32)
    k, n = w.shape
    if group_size == -1:
        group_size = k
    if group_size <= 0 or k % group_size:
        raise ValueError(f"group_size: must be -1 or a divisor of K = {k}, got {group_size}")
    groups = k // group_size
    order = torch.randperm(k, generator=generator) if act_order else torch.arange(k)
    g_idx = torch.empty(k, dtype=torch.int32)
    g_idx[order] = (torch.arange(k) // group_size).to(torch.int32)

    rows = w[order].reshape(groups, group_size, n)
    low = rows.amin(dim=1).clamp(max=0)
    high = rows.amax(dim=1).clamp(min=0)
    if sym:
        high = torch.maximum(low.abs(), high)
        low = -high
    scale = ((high - low) / 15).clamp(min=1e-8).to(torch.float16)
    scale32 = scale.to(torch.float32)
    zero = torch.full_like(scale32, 8.0) if sym else torch.round(-low / scale32).clamp(0, 15)
    q = torch.clamp(torch.round(w / scale32[g_idx.long()]) + zero[g_idx.long()], 0, 15).to(torch.int32)
    stored_zero = zero.to(torch.int32)
    if checkpoint_format == "gptq":
        stored_zero = (stored_zero - 1) & 15  # v1 stores zero - 1
    return dict(qweight=pack_rows(q), qzeros=pack_columns(stored_zero), scales=scale, g_idx=g_idx)


def _atomic_write(path: Path, write) -> None:
    """write(tmp_path) then os.replace, so a failure leaves no partial file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_gptq_checkpoint(
    model_dir,
    modules: Mapping[str, Mapping[str, torch.Tensor]],
    quantize_config: Mapping,
    shard_name: str = "model.safetensors",
) -> None:
    """Write modules {"model.layers.0.self_attn.q_proj": {qweight, qzeros, scales, g_idx, bias?}}
    as one safetensors shard plus quantize_config.json (each written atomically)."""
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{key}": t.contiguous() for name, parts in modules.items() for key, t in parts.items()}
    _atomic_write(model_dir / shard_name, lambda tmp: save_file(tensors, tmp))
    text = json.dumps(dict(quantize_config), indent=2) + "\n"
    _atomic_write(model_dir / "quantize_config.json", lambda tmp: Path(tmp).write_text(text))


def _read_quantize_config(model_dir: Path) -> tuple[dict, str]:
    """(quantization settings, file name) from quantize_config.json or config.json."""
    path = model_dir / "quantize_config.json"
    key = None
    if not path.is_file():
        path, key = model_dir / "config.json", "quantization_config"
        if not path.is_file():
            raise ConfigError(f"{model_dir}: quantize_config.json: missing (and no config.json with quantization_config)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: (file): cannot be read as JSON: {exc}") from None
    if key is not None:
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise ConfigError(f"{path}: {key}: missing (no quantize_config.json either)")
        data = data[key]
        method = data.get("quant_method", "gptq")
        if method != "gptq":
            raise ConfigError(f"{path}: {key}.quant_method: must be 'gptq', got {method!r}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (file): must hold a JSON object")
    return data, str(path)


def _checked_config(config: dict, source: str) -> dict:
    def field(name, kinds, default=None, required=False):
        if name not in config:
            if required:
                raise ConfigError(f"{source}: {name}: missing")
            return default
        value = config[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{source}: {name}: has the wrong type ({type(value).__name__})")
        return value

    bits = field("bits", (int,), required=True)
    if bits != 4:
        raise ConfigError(f"{source}: bits: only 4-bit GPTQ is supported, got {bits}")
    group_size = field("group_size", (int,), default=-1)
    if group_size != -1 and group_size <= 0:
        raise ConfigError(f"{source}: group_size: must be -1 or positive, got {group_size}")
    formats = {name: field(name, (str,)) for name in ("checkpoint_format", "format") if name in config}
    if len(set(formats.values())) > 1:
        raise ConfigError(f"{source}: checkpoint_format: disagrees with format ({formats})")
    checkpoint_format = next(iter(formats.values()), "gptq")
    if checkpoint_format not in FORMATS:
        name = next(iter(formats))
        raise ConfigError(f"{source}: {name}: must be one of {FORMATS}, got {checkpoint_format!r}")
    return dict(
        bits=bits,
        group_size=group_size,
        desc_act=field("desc_act", (bool,), default=False),
        sym=field("sym", (bool,), default=True),
        checkpoint_format=checkpoint_format,
    )


def _read_shards(model_dir: Path) -> dict:
    """{tensor name: (tensor, shard path)} from every *.safetensors file."""
    from safetensors import safe_open

    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise ValueError(f"{model_dir}: no *.safetensors files")
    tensors = {}
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as f:
                for name in f.keys():
                    tensors[name] = (f.get_tensor(name), str(shard))
        except Exception as exc:  # safetensors raises SafetensorError, OSError, ... on bad files
            raise ValueError(f"{shard}: (file): not a readable safetensors file: {exc}") from None
    return tensors


def load_gptq(model_dir) -> dict:
    """Every GPTQ linear of a model directory as {module name: Q4Matrix}.

    Reads quantize_config.json (or config.json's quantization_config) and every
    *.safetensors shard. Raises pntk.ConfigError for config problems and ValueError naming
    the file and tensor for missing, malformed or inconsistent tensors.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir}: (path): not a directory")
    config, config_source = _read_quantize_config(model_dir)
    settings = _checked_config(config, config_source)
    tensors = _read_shards(model_dir)
    modules = sorted(name[: -len(".qweight")] for name in tensors if name.endswith(".qweight"))
    if not modules:
        raise ValueError(f"{model_dir}: (tensors): no *.qweight tensor in the safetensors files")
    matrices = {}
    for module in modules:
        qweight, shard = tensors[f"{module}.qweight"]
        parts = {}
        for key in ("qzeros", "scales"):
            if f"{module}.{key}" not in tensors:
                raise ValueError(f"{shard}: {module}.{key}: missing (the module has a qweight)")
            parts[key] = tensors[f"{module}.{key}"][0]
        g_idx = tensors.get(f"{module}.g_idx", (None,))[0]
        bias = tensors.get(f"{module}.bias", (None,))[0]
        group_size = settings["group_size"]
        if group_size > 0 and qweight.dim() == 2 and parts["scales"].dim() == 2:
            k = qweight.shape[0] * 8
            expected = -(-k // group_size)
            if parts["scales"].shape[0] != expected:
                raise ValueError(
                    f"{shard}: {module}.scales: {parts['scales'].shape[0]} groups, but group_size "
                    f"{group_size} and in_features {k} give {expected}"
                )
        try:
            matrices[module] = Q4Matrix.from_gptq(
                qweight, parts["qzeros"], parts["scales"], g_idx, bias, settings["checkpoint_format"]
            )
        except ValueError as exc:
            raise ValueError(f"{shard}: {module}.{exc}") from None
    return matrices
