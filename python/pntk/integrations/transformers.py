"""Give a loaded Transformers Llama model pntk's RoPE tables (and, optionally, pntk's q4 matmul).

The plan is decided once by the core (pntk.RopePlan); this module only swaps the model's
rotary embeddings for ones that look pntk's tables up by position. Two generations of
Transformers are covered:

- 4.45+ and 5.x: one `model.rotary_emb`, forward(x, position_ids) -> (cos, sin) [B, T, d];
- 4.31-4.44 (text-generation-webui 1.6.1 pins 4.33): one `self_attn.rotary_emb` per layer,
  forward(x, seq_len) -> cos/sin [1, 1, T, d] (up to 4.35) or [T, d] (4.36, 4.37), or
  forward(x, position_ids) -> [B, T, d] (4.38-4.44).

Transformers 4.31-4.38 refuse rope_scaling dicts other than {type: linear|dynamic, factor: float}
while reading config.json; :func:`accepted_config` / :func:`accepting_rope_scaling` hand them a
config without it, and :func:`apply` then gives the model the scaling.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
from pathlib import Path
from typing import Optional, Union

import torch

from ..q4 import Q4Matrix
from ..rope import RopePlan
from .q4_linear import Q4Linear

# forward styles of a rotary embedding module (see the module docstring)
POSITION_IDS, SEQ_LEN_4D, SEQ_LEN_2D = "position_ids", "seq_len_4d", "seq_len_2d"


class PntkRotaryEmbedding(torch.nn.Module):
    """Drop-in for Transformers' LlamaRotaryEmbedding, in the forward style of the one it replaces.

    POSITION_IDS (5.x, 4.38+): forward(x, position_ids [B, T]) -> (cos, sin), each [B, T, rotary_dim];
    SEQ_LEN_4D (4.31-4.35): forward(x, seq_len) -> rows 0..seq_len-1 as [1, 1, seq_len, rotary_dim];
    SEQ_LEN_2D (4.36, 4.37): the same rows as [seq_len, rotary_dim].
    Values are in x.dtype, from tables that the core rounds once from double into that dtype
    (attention factor folded in). Tables grow (a dynamic plan is re-evaluated) when a position
    passes their end.
    """

    def __init__(self, plan: RopePlan, device: Optional[torch.device] = None, style: str = POSITION_IDS):
        super().__init__()
        if style not in (POSITION_IDS, SEQ_LEN_4D, SEQ_LEN_2D):
            raise ValueError(f"style: must be {POSITION_IDS}, {SEQ_LEN_4D} or {SEQ_LEN_2D}, got {style!r}")
        self.plan = plan
        self.style = style
        self.table_len = plan.max_seq_len
        self.device = torch.device(device or "cpu")
        self._tables: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device)
        if key not in self._tables:
            table_dtype = dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
            cos, sin = self.plan.tables(self.table_len, dtype=table_dtype, device=device)
            self._tables[key] = (cos.to(dtype), sin.to(dtype))
        return self._tables[key]

    def forward(self, x: torch.Tensor, position_ids: Optional[torch.Tensor] = None, seq_len: Optional[int] = None):
        if self.style == POSITION_IDS:
            if position_ids is None:
                raise ValueError("position_ids: required by this rotary embedding (Transformers 4.38+ style)")
            needed = int(position_ids.max()) + 1
        else:
            if seq_len is None:
                raise ValueError("seq_len: required by this rotary embedding (Transformers 4.31-4.37 style)")
            needed = int(seq_len)
        if needed > self.table_len:
            self.table_len = needed
            self._tables.clear()
        cos, sin = self.tables(x.dtype, x.device)
        if self.style == POSITION_IDS:
            return cos[position_ids], sin[position_ids]
        cos, sin = cos[:needed], sin[:needed]
        if self.style == SEQ_LEN_4D:
            return cos[None, None], sin[None, None]
        return cos, sin

    def extra_repr(self) -> str:
        return f"style={self.style}, table_len={self.table_len}, plan={self.plan.describe()!r}"


def forward_style(rotary: torch.nn.Module) -> str:
    """How Transformers calls this rotary embedding: POSITION_IDS, SEQ_LEN_4D or SEQ_LEN_2D."""
    if isinstance(rotary, PntkRotaryEmbedding):
        return rotary.style
    if "position_ids" in inspect.signature(rotary.forward).parameters:
        return POSITION_IDS
    cached = getattr(rotary, "cos_cached", None)
    if cached is None:
        raise ValueError(f"{type(rotary).__name__}: cos_cached: a seq_len-style rotary embedding without it")
    return SEQ_LEN_4D if cached.dim() == 4 else SEQ_LEN_2D


def _rotary_slots(model: torch.nn.Module) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """(parent, rotary) for every `rotary_emb` attribute: the model's and each layer's."""
    slots = []
    for module in model.modules():
        rotary = getattr(module, "rotary_emb", None)
        if isinstance(rotary, torch.nn.Module):
            slots.append((module, rotary))
    return slots


def _model_config_source(model: torch.nn.Module, config_path: Optional[Union[str, os.PathLike]]):
    if config_path is not None:
        return config_path
    config = model.config
    directory = getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", "")
    if directory and os.path.isfile(os.path.join(directory, "config.json")):
        return directory
    values = config.to_dict()
    if values.get("pntk_rope_scaling") is not None:  # set aside by accepting_rope_scaling()
        values["rope_scaling"] = values.pop("pntk_rope_scaling")
    return values


def apply(
    model: torch.nn.Module,
    config_path: Optional[Union[str, os.PathLike]] = None,
    *,
    plan: Optional[RopePlan] = None,
    announce: bool = True,
    swap_q4: bool = False,
    checkpoint_format: str = "gptq",
    **overrides,
) -> RopePlan:
    """Give every layer of a loaded Llama model pntk's RoPE tables; returns the plan.

    The plan comes from `plan`, else `config_path` (a model directory or config.json), else the
    config.json the model was loaded from, else model.config. `overrides` are RopePlan.from_config's
    (theta, alpha_value, compress_pos_emb, max_seq_len). Every rotary embedding is replaced: the
    model's (4.45+, 5.x) and each layer's (4.31-4.44, AutoGPTQ's fused attention). With
    swap_q4=True, GPTQ QuantLinear modules become Q4Linear (see swap_quant_linear).
    Prints the report line unless announce=False.
    """
    if plan is None:
        plan = RopePlan.from_config(_model_config_source(model, config_path), **overrides)
    slots = _rotary_slots(model)
    if not slots:
        raise ValueError(f"{type(model).__name__}: rotary_emb: not found (is this a Transformers Llama model?)")
    for parent, rotary in slots:
        device = next((b.device for b in rotary.buffers()), None)
        parent.rotary_emb = PntkRotaryEmbedding(plan, device=device, style=forward_style(rotary))
    if swap_q4:
        swap_quant_linear(model, checkpoint_format=checkpoint_format)
    if announce:
        plan.announce()
    return plan


def _config_file(path: Union[str, os.PathLike]) -> Path:
    """The config.json of a model directory (or the file itself), checked to exist and parse."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    try:
        json.loads(file.read_text())
    except FileNotFoundError:
        raise ValueError(f"{file}: (path): not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: (json): {exc}") from None
    return file


def _strict_rope_validation():
    """LlamaConfig's rope_scaling check of Transformers 4.31-4.44, or None (5.x has none to bypass)."""
    try:
        from transformers import LlamaConfig
    except ImportError:
        return None, None
    return LlamaConfig, getattr(LlamaConfig, "_rope_scaling_validation", None)


@contextlib.contextmanager
def accepting_rope_scaling():
    """While active, a LlamaConfig whose rope_scaling its Transformers rejects (yarn, llama3, pntk,
    extra keys, an int factor) is built with rope_scaling None, the dict kept as pntk_rope_scaling.

    For loaders that read config.json themselves (AutoGPTQ, text-generation-webui); the model they
    build has plain RoPE until :func:`apply` gives it pntk's tables, which read config.json.
    """
    config_class, validation = _strict_rope_validation()
    if validation is None:
        yield
        return

    def lenient(self):
        try:
            validation(self)
        except ValueError:
            self.pntk_rope_scaling = self.rope_scaling
            self.rope_scaling = None

    config_class._rope_scaling_validation = lenient
    try:
        yield
    finally:
        config_class._rope_scaling_validation = validation


def accepted_config(path: Union[str, os.PathLike], **kwargs):
    """AutoConfig for a model directory (or config.json) that this Transformers accepts; pass it as
    from_pretrained(..., config=...) and call :func:`apply` on the model afterwards."""
    from transformers import AutoConfig

    file = _config_file(path)
    with accepting_rope_scaling():
        return AutoConfig.from_pretrained(str(file.parent), **kwargs)


def swap_quant_linear(model: torch.nn.Module, checkpoint_format: str = "gptq") -> int:
    """Replace every 4-bit GPTQ QuantLinear (AutoGPTQ, transformers/optimum) by a pntk Q4Linear.

    The QuantLinear's qweight/qzeros/scales/g_idx/bias go to pntk.Q4Matrix.from_gptq unchanged;
    checkpoint_format is "gptq" (v1: W = s*(q - ((z+1) & 15)), what AutoGPTQ holds) or "gptq_v2"
    (W = s*(q - z)). Returns how many modules were swapped.
    """
    swapped = []
    for name, module in model.named_modules():
        if type(module).__name__ != "QuantLinear" or not hasattr(module, "qweight"):
            continue
        kind = type(module).__module__
        if "marlin" in kind:
            raise ValueError(f"{name}: qweight: {kind} repacks the weights for Marlin; load without that backend")
        bits = getattr(module, "bits", 4)
        if bits != 4:
            raise ValueError(f"{name}: bits: pntk runs 4-bit GPTQ only, got {bits}")
        bias = getattr(module, "bias", None)
        g_idx = getattr(module, "g_idx", None)
        matrix = Q4Matrix.from_gptq(module.qweight, module.qzeros, module.scales, g_idx, bias, checkpoint_format)
        swapped.append((name, Q4Linear(matrix)))
    for name, replacement in swapped:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
    return len(swapped)
