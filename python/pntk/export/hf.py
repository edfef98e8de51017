"""Export to Transformers 5, vLLM and ExLlamaV2: a config.json whose rope type is "longrope".

All three read per-dimension factors f_i and build inv_freq_i = 1 / (f_i * p_i):
  Transformers  modeling_rope_utils._compute_longrope_parameters: rope_parameters (or the legacy
                rope_scaling) long_factor, short_factor, original_max_position_embeddings (the
                top-level key wins), factor, attention_factor (default sqrt(1 + ln f / ln L));
  vLLM          model_executor/layers/rotary_embedding/__init__.py get_rope -> phi3_long_rope_scaled_rope.py:
                the same factors, and short_mscale / long_mscale (default that same sqrt), which
                it reads instead of attention_factor;
  ExLlamaV2     config.py: rope_scaling long_factor / short_factor and the top-level
                original_max_position_embeddings (its attention scaling needs pntk's hook).
long_factor = short_factor, so the length at which an engine switches sets is irrelevant, and
every attention / magnitude factor is written explicitly as the plan's own (1.0 for pntk).
Only "rope_scaling" is written (a "rope_parameters" key is removed): every engine above reads it
(Transformers 5 turns it into rope_parameters), so no second copy can disagree with it.
The "pntk_export" record keeps the scaling the config had, so pntk still reports the original plan.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import _core
from ..rope import RopePlan
from ._files import write_text

BACKUP_SUFFIX = ".pntk-backup"
RECORD_KEY = "pntk_export"
SCALING_KEYS = ("rope_scaling", "rope_parameters")


@dataclass
class HfExport:
    plan: RopePlan
    config_path: str  # the config.json written
    backup_path: Optional[str]  # the original config.json kept beside it (in-place export)


def config_path_of(model: str) -> str:
    return os.path.join(model, "config.json") if os.path.isdir(model) else model


def _decimal(factor: np.float32) -> float:
    """The shortest decimal that reads back as the same fp32 (JSON keeps doubles)."""
    short = float(str(factor))
    return short if np.float32(short) == factor else float(factor)


def longrope_config(config: dict, plan: RopePlan) -> dict:
    """`config` with its RoPE scaling replaced by the longrope form of `plan`."""
    factors = [_decimal(f) for f in _core.frequency_factors(plan.core)]
    scaling = {
        "rope_type": "longrope",
        "rope_theta": plan.theta,
        "factor": plan.factor,
        "original_max_position_embeddings": plan.original_max_position_embeddings,
        "long_factor": factors,
        "short_factor": factors,
        "attention_factor": plan.attention_factor,  # Transformers
        "short_mscale": plan.attention_factor,  # vLLM
        "long_mscale": plan.attention_factor,  # vLLM
    }
    # A config exported before keeps the scaling its record holds: the one the model was trained with.
    before = config.get(RECORD_KEY) or config
    exported = {key: value for key, value in config.items() if key not in (*SCALING_KEYS, RECORD_KEY)}
    parameters = config.get("rope_parameters")
    if isinstance(parameters, dict) and "partial_rotary_factor" in parameters:
        exported.setdefault("partial_rotary_factor", parameters["partial_rotary_factor"])
    exported.update(
        rope_theta=plan.theta,  # the base a removed rope_parameters may have held
        max_position_embeddings=plan.extended_max_position_embeddings,
        original_max_position_embeddings=plan.original_max_position_embeddings,
        rope_scaling=scaling,
    )
    exported[RECORD_KEY] = {
        "method": plan.method,
        "factor": plan.factor,
        "exported_as": "longrope",
        **{key: before.get(key) for key in SCALING_KEYS},
    }
    return exported


def _link_model_files(model_dir: str, out_dir: str) -> None:
    """Symlink the weights, tokenizer, ... of `model_dir` into `out_dir` (not config.json)."""
    for name in sorted(os.listdir(model_dir)):
        link = os.path.join(out_dir, name)
        if name.startswith("config.json") or os.path.lexists(link):
            continue
        os.symlink(os.path.join(model_dir, name), link)


def export_hf(model: str, out_dir: Optional[str] = None) -> HfExport:
    """Write the longrope config.json of `model` (a directory or its config.json).

    In place unless `out_dir` is given; in place, the original is kept as config.json.pntk-backup
    (the first one: exporting again never overwrites it). With `out_dir`, the model directory's
    other files are symlinked beside the new config.json (names already there are left alone),
    so `out_dir` can be served as it is. Plans that per-dimension factors cannot express
    (dynamic, ...) raise pntk.ConfigError before anything is written.
    """
    source = config_path_of(model)
    plan = RopePlan.from_config(source)
    with open(source, encoding="utf-8") as stream:
        config = json.load(stream)
    text = json.dumps(longrope_config(config, plan), indent=2) + "\n"
    target = source if out_dir is None else os.path.join(out_dir, "config.json")
    # The core reads the result back before it is written: the recorded plan must come out.
    exported_plan = RopePlan(_core.plan_from_json(text, target))
    backup = None
    if out_dir is None:
        backup = source + BACKUP_SUFFIX
        if not os.path.exists(backup):
            with open(source, encoding="utf-8") as stream:
                write_text(backup, stream.read())
    else:
        os.makedirs(out_dir, exist_ok=True)
        _link_model_files(os.path.dirname(os.path.abspath(source)), out_dir)
    write_text(target, text)
    return HfExport(plan=exported_plan, config_path=target, backup_path=backup)
