"""Give a loaded Transformers Llama model pntk's RoPE tables.

The plan is decided once by the core (pntk.RopePlan); this module only swaps the model's
rotary embedding for one that looks pntk's tables up by position.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch

from ..rope import RopePlan


class PntkRotaryEmbedding(torch.nn.Module):
    """Drop-in for Transformers 5's LlamaRotaryEmbedding.

    forward(x, position_ids [B, T]) -> (cos, sin), each [B, T, rotary_dim] in x.dtype, looked up
    in tables that the core rounds once from double into that dtype (attention factor folded in).
    Tables grow (and a dynamic plan is re-evaluated) when a position passes their end.
    """

    def __init__(self, plan: RopePlan, device: Optional[torch.device] = None):
        super().__init__()
        self.plan = plan
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

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        needed = int(position_ids.max()) + 1
        if needed > self.table_len:
            self.table_len = needed
            self._tables.clear()
        cos, sin = self.tables(x.dtype, x.device)
        return cos[position_ids], sin[position_ids]


def _model_config_source(model: torch.nn.Module, config_path: Optional[Union[str, os.PathLike]]):
    if config_path is not None:
        return config_path
    config = model.config
    directory = getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", "")
    if directory and os.path.isfile(os.path.join(directory, "config.json")):
        return directory
    return config.to_dict()


def apply(
    model: torch.nn.Module,
    config_path: Optional[Union[str, os.PathLike]] = None,
    *,
    plan: Optional[RopePlan] = None,
    announce: bool = True,
    **overrides,
) -> RopePlan:
    """Give every layer of a loaded Llama model pntk's RoPE tables; returns the plan.

    The plan comes from `plan`, else `config_path` (a model directory or config.json), else the
    config.json the model was loaded from, else model.config. `overrides` are RopePlan.from_config's
    (theta, alpha_value, compress_pos_emb, max_seq_len). Prints the report line unless announce=False.
    """
    if plan is None:
        plan = RopePlan.from_config(_model_config_source(model, config_path), **overrides)
    backbone = getattr(model, "model", model)
    rotary = getattr(backbone, "rotary_emb", None)
    if rotary is None:
        raise ValueError(f"{type(model).__name__}: model.rotary_emb: not found (is this a Transformers 5 Llama model?)")
    device = next((b.device for b in rotary.buffers()), None)
    backbone.rotary_emb = PntkRotaryEmbedding(plan, device=device)
    if announce:
        plan.announce()
    return plan
