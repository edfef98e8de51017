"""ExLlama (turboderp/exllama v1 and the pip `exllama` package): pntk's RoPE tables and q4 matmul.

The patch files (patches/exllama/) and the runtime hook (:func:`install`) call the same
functions, at the same points of ExLlama's code:

    ExLlamaConfig.__init__ end          configure(config, model_config_path)
    calculate_rotary_embedding_base()   apply_alpha(config)
    ExLlama.__init__, per device        sin, cos = sin_cos(config, device)
    ExLlama._forward start              check_positions(config, past_len + seq_len)
    Ex4bitLinear.__init__ / forward     q4_matrix(linear) / q4_forward(linear, x, lora)
    model_init.get_model_files end      default_length(args)

The plan is decided by pntk.RopePlan from config.json plus ExLlama's own settings, which keep
their meaning: an explicit rotary_embedding_base (theta) replaces the base, alpha_value stretches
it by alpha^(d/(d-2)) before the method, compress_pos_emb divides positions after it.
PNTK_EXLLAMA_Q4=1 (or config.pntk_q4 = True before the model is built) routes Ex4bitLinear
through pntk.Q4Matrix; the fused attention and MLP kernels then stay off, since they read
ExLlama's own q4 buffers.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import sys
import weakref
from typing import Optional

import torch

from ..q4 import Q4Matrix
from ..rope import RopePlan

Q4_SWITCH = "PNTK_EXLLAMA_Q4"


@dataclasses.dataclass
class _RopeSettings:
    """What pntk keeps on an ExLlamaConfig (as config.pntk)."""

    config_path: str
    theta: Optional[float]  # an explicit base set by the runner, else None (the config's)
    base: float  # the base pntk last wrote into config.rotary_embedding_base
    table_len: Optional[int] = None  # rows of the tables ExLlama holds, once built
    announced: set = dataclasses.field(default_factory=set)


_reported_modules: "weakref.WeakSet" = weakref.WeakSet()


def configure(config, model_config_path) -> None:
    """Read the RoPE fields of config.json through pntk; default max_seq_len to the extended length.
    The first time, also says which exllama model.py this is (see report)."""
    module = sys.modules.get(type(config).__module__)
    if module is not None:
        report_once(module)
    path = os.fspath(model_config_path)
    plan = RopePlan.from_config(path, static_tables=True)
    config.pntk = _RopeSettings(config_path=path, theta=None, base=plan.base)
    config.rotary_embedding_base = plan.base
    config.original_max_position_embeddings = plan.original_max_position_embeddings
    config.max_position_embeddings = plan.extended_max_position_embeddings
    config.rope_scaling_method = plan.method
    config.max_seq_len = plan.max_seq_len
    config.pntk_q4 = os.environ.get(Q4_SWITCH) == "1"


def _settings(config) -> _RopeSettings:
    settings = getattr(config, "pntk", None)
    if settings is None:
        raise ValueError(
            "ExLlamaConfig: pntk: this config was made by an unpatched ExLlamaConfig (call "
            "pntk.integrations.exllama.install() before creating it, or apply patches/exllama)"
        )
    if config.rotary_embedding_base != settings.base:  # the runner assigned a base of its own
        settings.theta = float(config.rotary_embedding_base)
        settings.base = config.rotary_embedding_base
    return settings


def plan_for(config) -> RopePlan:
    """The plan for an ExLlamaConfig as it stands (its base, alpha_value, compress_pos_emb, max_seq_len)."""
    settings = _settings(config)
    return RopePlan.from_config(
        settings.config_path,
        theta=settings.theta,
        alpha_value=config.alpha_value,
        compress_pos_emb=config.compress_pos_emb,
        max_seq_len=config.max_seq_len,
        static_tables=True,
    )


def apply_alpha(config) -> None:
    """calculate_rotary_embedding_base(): the base after alpha_value, as the core computes it."""
    plan = plan_for(config)
    config.rotary_embedding_base = plan.base
    config.pntk.base = plan.base


def sin_cos(config, device) -> tuple[torch.Tensor, torch.Tensor]:
    """ExLlama's (sin, cos) for one device: fp16 [1, 1, max_seq_len, head_dim]; reports once per device."""
    plan = plan_for(config)
    cos, sin = plan.tables(config.max_seq_len, dtype=torch.float16, device=device)
    settings = config.pntk
    settings.table_len = config.max_seq_len
    if str(device) not in settings.announced:
        settings.announced.add(str(device))
        plan.announce(f"ExLlama {device}")
    return sin[None, None], cos[None, None]


def check_positions(config, end: int) -> None:
    """Refuse positions past the tables (ExLlama's rotary kernel would read beyond them)."""
    settings = config.pntk
    if settings.table_len is not None and end > settings.table_len:
        raise ValueError(
            f"{settings.config_path}: max_seq_len: positions up to {end - 1} requested, but the RoPE "
            f"tables hold {settings.table_len} (max_seq_len); load the model with a larger max_seq_len "
            f"(the model is trained for {config.max_position_embeddings})"
        )


def default_length(args) -> None:
    """ExLlama scripts: -l/--length defaults to the config's extended length instead of 2048."""
    if args.length is None:
        args.length = RopePlan.from_config(args.config, static_tables=True).extended_max_position_embeddings


def q4_matrix(linear):
    """A pntk.Q4Matrix for an Ex4bitLinear when the switch is on, else None."""
    config = linear.config
    if not getattr(config, "pntk_q4", False):
        return None
    g_idx = None if linear.g_idx is None else linear.g_idx.to(linear.qweight.device)
    matrix = Q4Matrix.from_gptq(linear.qweight, linear.qzeros, linear.scales, g_idx, linear.bias, "gptq")
    config.fused_attn = False  # the fused kernels read ExLlama's q4 buffers, not pntk's
    config.fused_mlp_thd = 0
    return matrix


def q4_forward(linear, x: torch.Tensor, lora) -> torch.Tensor:
    """Ex4bitLinear.forward through pntk (bias inside the matrix; LoRA added as ExLlama does)."""
    out = linear.pntk_q4(x)
    if linear.lora_applies(lora):
        out = out + linear.lora_apply(lora, x)
    return out


# -- which exllama is this? -------------------------------------------------------------------

PATCHED, HOOKED, UNPATCHED = "patched by pntk", "pntk runtime hook", "NOT patched"


def status(module) -> str:
    """How an imported exllama model module uses pntk: PATCHED, HOOKED or UNPATCHED."""
    if getattr(module, "_pntk", None) is sys.modules[__name__]:
        return PATCHED
    if getattr(module, "_pntk_runtime_hook", False):
        return HOOKED
    return UNPATCHED


def report(module, file=None) -> str:
    """One line naming the exllama model.py in use and whether pntk is in it (the model card's
    failure mode is a runner importing an unpatched exllama from elsewhere)."""
    state = status(module)
    line = f"pntk: exllama {module.__file__}: {state}"
    if state == UNPATCHED:
        line += " (RoPE scaling from config.json is ignored: run `pntk patch apply --runner exllama "
        line += f"--target {os.path.dirname(module.__file__)}` or pntk.integrations.exllama.install())"
        print(line, file=file or sys.stderr, flush=True)
    elif os.environ.get("PNTK_QUIET") != "1":
        print(line, file=file or sys.stdout, flush=True)
    return state


def report_once(module) -> None:
    """report(module), the first time it is asked for this module."""
    if module not in _reported_modules:
        _reported_modules.add(module)
        report(module)


def find_module():
    """The exllama model module already imported (pip `exllama.model` or a checkout's `model`), else import it."""
    for name in ("exllama.model", "model"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "ExLlamaConfig") and hasattr(module, "ExLlama"):
            return module
    return importlib.import_module("exllama.model")


# -- runtime hook: the same calls, wrapped around an unpatched module -------------------------


def install(module=None):
    """Hook pntk into an imported exllama model module without editing files; returns it.

    A module patched on disk is left alone. ExLlamaConfig objects must be made after install().
    """
    module = module or find_module()
    if status(module) != UNPATCHED:
        return module
    config_class, model_class, linear_class = module.ExLlamaConfig, module.ExLlama, module.Ex4bitLinear

    def wrap(cls, name, make):
        original = getattr(cls, name)
        setattr(cls, name, functools.wraps(original)(make(original)))

    def config_init(original):
        def __init__(self, model_config_path):
            original(self, model_config_path)
            configure(self, model_config_path)
        return __init__

    def model_init(original):
        def __init__(self, config):
            _settings(config)  # refuse a config made before install(), before loading weights
            original(self, config)
            self.sincos = {device: sin_cos(config, device) for device in config.device_map.get_layers_devs()}
            for index, layer in enumerate(self.layers):
                layer.self_attn.sin, layer.self_attn.cos = self.sincos[config.device_map.layers[index]]
        return __init__

    def model_forward(original):
        def _forward(self, input_ids, cache, *args, **kwargs):
            check_positions(self.config, cache.current_seq_len + input_ids.shape[-1])
            return original(self, input_ids, cache, *args, **kwargs)
        return _forward

    def linear_init(original):
        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.pntk_q4 = q4_matrix(self)
        return __init__

    def linear_forward(original):
        def forward(self, x, lora):
            if getattr(self, "pntk_q4", None) is not None:
                return q4_forward(self, x, lora)
            return original(self, x, lora)
        return forward

    wrap(config_class, "__init__", config_init)
    config_class.calculate_rotary_embedding_base = apply_alpha
    wrap(model_class, "__init__", model_init)
    wrap(model_class, "_forward", model_forward)
    wrap(linear_class, "__init__", linear_init)
    wrap(linear_class, "forward", linear_forward)
    module._pntk_runtime_hook = True
    return module


def _hook_model(module) -> None:
    if hasattr(module, "ExLlamaConfig") and hasattr(module, "Ex4bitLinear"):  # "model" is a common name
        install(module)


def _hook_model_init(module) -> None:
    if not (hasattr(module, "add_args") and hasattr(module, "get_model_files")):
        return
    add_args, get_model_files = module.add_args, module.get_model_files

    @functools.wraps(add_args)
    def add_args_hooked(parser):
        add_args(parser)
        parser.set_defaults(length=None)

    @functools.wraps(get_model_files)
    def get_model_files_hooked(args):
        get_model_files(args)
        default_length(args)

    module.add_args, module.get_model_files = add_args_hooked, get_model_files_hooked


def runtime_hooks() -> dict:
    """Module name -> function to run right after that module is imported (pntk.launch)."""
    return {"exllama.model": _hook_model, "model": _hook_model, "model_init": _hook_model_init}
