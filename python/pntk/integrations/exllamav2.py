"""ExLlamaV2 (turboderp-org/exllamav2 v0.3.2): RoPE from pntk's plan.

ExLlamaV2 builds its sin/cos tables per device (device.py, ExLlamaV2DeviceContext.prepare_sincos)
from `exllamav2.rope.get_rope_params(device, cfg, base) -> (inv_freq, scaling_factor)` and
multiplies cos and sin by scaling_factor. It knows neither airophin's pntk (a config with only
original_max_position_embeddings) nor "ntk" / "dynamic" configs, and for longrope (what
`pntk export` writes) it always scales by sqrt(1 + ln(a/b) / ln b) once max_seq_len a exceeds
the original length b: wrong for pntk, which has no attention scaling.

`rope_params` answers that call from pntk's plan for those models; either
  - `install()` at run time (wraps exllamav2.rope.get_rope_params), or
  - the patch in patches/exllamav2 (four lines in exllamav2/rope.py, applied by `pntk patch`)
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
    rotary_embedding_base (theta), scale_alpha_value, scale_pos_emb (applied by ExLlamaV2 to
    positions, reported only) and max_seq_len; its tables are static."""
    return RopePlan.from_config(
        os.path.join(cfg.model_dir, "config.json"),
        theta=cfg.rotary_embedding_base,
        alpha_value=cfg.scale_alpha_value or 1.0,
        compress_pos_emb=cfg.scale_pos_emb or 1.0,
        max_seq_len=cfg.max_seq_len,
        static_tables=True,
    )


def rope_params(device, cfg, base: float) -> Optional[tuple[torch.Tensor, float]]:
    """(inv_freq on `device`, attention factor) from pntk's plan, or None where ExLlamaV2's own
    code is right (its methods, a sliding-window layer's second base). Prints the plan line."""
    if base != cfg.rotary_embedding_base:
        return None
    plan = plan_for(cfg)
    if plan.method in RUNNER_METHODS and not plan.core.exported_as:
        return None
    plan.announce(where=f"exllamav2 {device}")
    return plan.inv_freq().to(device), plan.attention_factor


def install() -> None:
    """Route exllamav2.rope.get_rope_params through rope_params (idempotent)."""
    from exllamav2 import rope

    if getattr(rope.get_rope_params, "pntk_hook", False):
        return
    upstream = rope.get_rope_params

    def get_rope_params(device, cfg, base):
        params = rope_params(device, cfg, base)
        return upstream(device, cfg, base) if params is None else params

    get_rope_params.pntk_hook = True
    rope.get_rope_params = get_rope_params
