"""ExLlamaV2 (turboderp-org/exllamav2 v0.3.2): RoPE tables from pntk's plan.

ExLlamaV2 builds its tables per device in device.py, ExLlamaV2DeviceContext.prepare_sincos:
sin/cos fp16 [1, 1, max_seq_len, d] (NeoX layout: angles pos / scale_pos_emb * inv_freq,
concatenated twice) from `rope.get_rope_params(device, cfg, base) -> (inv_freq, scaling_factor)`,
cos and sin multiplied by scaling_factor. It knows neither airophin's pntk (a config with only
original_max_position_embeddings) nor "ntk" / "dynamic" configs, and for longrope (what
`pntk export` writes) it always scales by sqrt(1 + ln(a/b) / ln b) once max_seq_len a exceeds
the original length b: wrong for pntk, which has no attention scaling.

`rope_tables` gives prepare_sincos pntk's own tables for those models; either
  - `install()` at run time (wraps ExLlamaV2DeviceContext.prepare_sincos), or
  - the patch in patches/exllamav2 (a few lines in exllamav2/device.py, applied by `pntk patch`)
routes it here. Plans ExLlamaV2 builds correctly itself (none, linear, yarn, llama3, a genuine
longrope) are left to it, so its own config handling (e.g. linear as scale_pos_emb) stays intact.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ..rope import RopePlan

UPSTREAM = "turboderp-org/exllamav2"
REVISION = "6a2d8311408aa23af34e8ec32e28085ea68dada7"  # tag v0.3.2 (2025-07-13)
RUNNER_METHODS = ("none", "linear", "yarn", "llama3", "longrope")  # ExLlamaV2 builds these itself


def plan_for(cfg) -> RopePlan:
    """The plan of an ExLlamaV2Config's model, with ExLlamaV2's settings as runner overrides:
    rotary_embedding_base (theta), scale_alpha_value, scale_pos_emb (compress_pos_emb) and
    max_seq_len; its tables are static."""
    return RopePlan.from_config(
        os.path.join(cfg.model_dir, "config.json"),
        theta=cfg.rotary_embedding_base,
        alpha_value=cfg.scale_alpha_value or 1.0,
        compress_pos_emb=cfg.scale_pos_emb or 1.0,
        max_seq_len=cfg.max_seq_len,
        static_tables=True,
    )


def rope_tables(device, cfg, base: float, neox: bool) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(sin, cos) fp16 [1, 1, max_seq_len, rotary_dim] on `device` from pntk's plan (attention
    factor folded in), or None where ExLlamaV2's own code is right (its methods, a sliding-window
    layer's second base). Prints the plan line. `neox`: the architecture's rope style is NeoX."""
    if base != cfg.rotary_embedding_base:
        return None
    plan = plan_for(cfg)
    if plan.method in RUNNER_METHODS and not plan.core.exported_as:
        return None
    if not neox or getattr(cfg, "pos_id_index", 0):
        raise ValueError(
            f"{plan.source}: (exllamav2): pntk's tables are NeoX-style from position 0, but this "
            "architecture rotates GPT-J-style pairs or offsets positions"
        )
    plan.announce(where=f"exllamav2 {device}")
    cos, sin = plan.tables(cfg.max_seq_len, dtype=torch.float16, device=device)
    return sin[None, None], cos[None, None]


def install() -> None:
    """Give ExLlamaV2DeviceContext.prepare_sincos pntk's tables (idempotent)."""
    from exllamav2.architecture import RopeStyle
    from exllamav2.device import ExLlamaV2DeviceContext, _torch_device

    upstream = ExLlamaV2DeviceContext.prepare_sincos
    if getattr(upstream, "pntk_hook", False):
        return

    def prepare_sincos(self):
        upstream(self)  # fills self.sin / self.cos, one entry per base; the first is the model's
        cfg = self.model.config
        neox = self.archparams.rope_style == RopeStyle.NEOX
        tables = rope_tables(_torch_device(self.device_idx), cfg, cfg.rotary_embedding_base, neox)
        if tables is not None:
            self.sin[0], self.cos[0] = tables

    prepare_sincos.pntk_hook = True
    ExLlamaV2DeviceContext.prepare_sincos = prepare_sincos
