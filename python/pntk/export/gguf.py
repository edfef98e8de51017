"""Export to llama.cpp: a copy of a GGUF file (from llama.cpp's converter) with the plan's
per-dimension frequency factors as the `rope_freqs.weight` tensor.

llama.cpp semantics (src/llama-model.cpp get_rope_factors; ggml/src/ggml-cpu/ops.cpp
rope_cache_init): a layer's rope_freqs, when present, is passed to ggml_rope_ext as
freq_factors and each angle becomes theta_i / freq_factors[i], with theta_i = pos * base^(-2i/d):
so rope_freqs holds the same f_i as longrope. The rope metadata is set so that nothing else
scales: {arch}.rope.scaling.type "none" (freq_scale forced to 1, no YaRN ramp: ext_factor 0),
scaling.factor 1, scaling.attn_factor = the plan's attention factor (1 for pntk: it multiplies
cos and sin), original_context_length and context_length the plan's lengths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import _core
from ..rope import RopePlan
from ._files import replaced_atomically
from .hf import config_path_of

SUPPORTED_ARCHITECTURES = ("llama",)  # llama.cpp loads rope_freqs for these (LLM_ARCH_LLAMA)
ROPE_FREQS = "rope_freqs.weight"
PLAN_KEY = "pntk.export.plan"


@dataclass
class GgufExport:
    plan: RopePlan
    source: str
    path: str
    replaced_rope_freqs: bool  # the input already had a rope_freqs tensor


def _gguf():
    """The gguf package (llama.cpp's reader/writer), an optional dependency: pip install gguf."""
    try:
        import gguf
    except ImportError:
        raise ValueError("<command line>: --to gguf: needs the gguf package (pip install 'pntk[gguf]')") from None
    return gguf


def _read(path: str):
    gguf = _gguf()
    if not os.path.isfile(path):
        raise ValueError(f"{path}: (path): no such file")
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as exc:  # the reader fails with ValueError, IndexError, struct and mmap errors
        raise ValueError(f"{path}: (gguf): not a readable GGUF file ({exc})") from None


def _field(reader, path: str, key: str, required: bool = False):
    field = reader.get_field(key)
    if field is None:
        if required:
            raise ValueError(f"{path}: {key}: is missing")
        return None
    try:
        return field.contents()
    except Exception as exc:
        raise ValueError(f"{path}: {key}: cannot be read ({exc})") from None


def _check_same_model(reader, path: str, arch: str, plan: RopePlan) -> None:
    """The GGUF must be the model whose config.json gave the plan."""
    dimension = _field(reader, path, f"{arch}.rope.dimension_count")
    dimension_key = f"{arch}.rope.dimension_count"
    if dimension is None:
        dimension_key = f"{arch}.embedding_length / {arch}.attention.head_count"
        heads = _field(reader, path, f"{arch}.attention.head_count", required=True)
        dimension = _field(reader, path, f"{arch}.embedding_length", required=True) // heads
    if dimension != plan.rotary_dim:
        raise ValueError(
            f"{path}: {dimension_key}: gives rotary dimension {dimension}, but {plan.source} gives "
            f"{plan.rotary_dim}: the GGUF and config.json are not the same model"
        )
    base = _field(reader, path, f"{arch}.rope.freq_base")
    if base is not None and np.float32(base) != np.float32(plan.theta):
        raise ValueError(
            f"{path}: {arch}.rope.freq_base: is {base:g}, but {plan.source} has rope_theta {plan.theta:g}: "
            "the GGUF and config.json are not the same model"
        )


def _rope_metadata(arch: str, plan: RopePlan) -> dict:
    T = _gguf().GGUFValueType
    return {
        f"{arch}.context_length": (plan.extended_max_position_embeddings, T.UINT32),
        f"{arch}.rope.dimension_count": (plan.rotary_dim, T.UINT32),
        f"{arch}.rope.freq_base": (plan.theta, T.FLOAT32),
        f"{arch}.rope.scaling.type": ("none", T.STRING),
        f"{arch}.rope.scaling.factor": (1.0, T.FLOAT32),
        f"{arch}.rope.scaling.attn_factor": (plan.attention_factor, T.FLOAT32),
        f"{arch}.rope.scaling.original_context_length": (plan.original_max_position_embeddings, T.UINT32),
        PLAN_KEY: (plan.describe(), T.STRING),
    }


def _dropped(key: str, arch: str) -> bool:
    """Keys that would scale a second time: YaRN's and the legacy linear scale."""
    return key.startswith(f"{arch}.rope.scaling.yarn_") or key == f"{arch}.rope.scale_linear"


def export_gguf(model: str, gguf_in: str, gguf_out: str) -> GgufExport:
    """Copy `gguf_in` to `gguf_out` with rope_freqs and the rope keys of `model`'s plan.

    `gguf_out` is written whole (temporary file + rename) and must differ from `gguf_in`.
    Raises pntk.ConfigError or ValueError naming the file and field before writing anything.
    """
    gguf = _gguf()
    plan = RopePlan.from_config(config_path_of(model))
    factors = _core.frequency_factors(plan.core)
    if os.path.abspath(gguf_out) == os.path.abspath(gguf_in) or (
        os.path.exists(gguf_out) and os.path.samefile(gguf_in, gguf_out)
    ):
        raise ValueError(f"{gguf_out}: (path): is the input file; export writes a new GGUF, never edits one in place")
    reader = _read(gguf_in)
    arch = _field(reader, gguf_in, gguf.Keys.General.ARCHITECTURE, required=True)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{gguf_in}: {gguf.Keys.General.ARCHITECTURE}: is {arch!r}; pntk exports rope_freqs for "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (the architectures whose llama.cpp graph reads it)"
        )
    _check_same_model(reader, gguf_in, arch, plan)
    metadata = _rope_metadata(arch, plan)
    replaced = any(tensor.name == ROPE_FREQS for tensor in reader.tensors)

    with replaced_atomically(gguf_out) as temporary:
        writer = gguf.GGUFWriter(temporary, arch, endianess=reader.endianess)
        if reader.alignment != gguf.GGUF_DEFAULT_ALIGNMENT:
            writer.add_custom_alignment(int(reader.alignment))
        skipped = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.ALIGNMENT, *metadata}
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name in skipped or _dropped(field.name, arch):
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        for key, (value, value_type) in metadata.items():
            writer.add_key_value(key, value, value_type)

        tensors = [tensor for tensor in reader.tensors if tensor.name != ROPE_FREQS]
        rope_freqs = np.asarray(factors, dtype=np.float32)
        writer.add_tensor_info(ROPE_FREQS, rope_freqs.shape, rope_freqs.dtype, rope_freqs.nbytes)
        for tensor in tensors:
            data = tensor.data
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.write_tensor_data(rope_freqs)
        for tensor in tensors:
            writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
        writer.close()
    return GgufExport(plan=plan, source=gguf_in, path=gguf_out, replaced_rope_freqs=replaced)
