"""text-generation-webui 1.6.1: pntk in its loaders, model settings and model menu.

The patch files (patches/text-generation-webui/) and the runtime hook (pntk.launch) call:

    modules/exllama.py, exllama_hf.py  use_exllama(ExLlama)            after importing ExLlama
    modules/models.py load_model       run_loader(load, model_name, loader)  around every loader
    modules/models_settings.py         model_settings(model, settings) defaults from config.json
    modules/ui_model_menu.py           menu_note()                     "Successfully loaded" text
    modules/shared.py, ui_model_menu   MAX_SEQ_LEN                     slider maxima

Loaders: ExLlama and ExLlama_HF run the patched ExLlama (or, when the imported exllama is not
patched, the runtime hook, and say so); Transformers, AutoGPTQ and GPTQ-for-LLaMa models get
pntk's tables in every layer when the config needs scaling; ExLlamav2 models get the plan
reported and a warning when they need a method ExLlamaV2 lacks.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path
from typing import Optional

from .. import ConfigError
from ..rope import RopePlan
from . import exllama

MAX_SEQ_LEN = 131072  # slider maxima: room for 128k-context models (webui 1.6.1 stops at 16384)

TRANSFORMERS_LOADERS = ("Transformers", "AutoGPTQ", "GPTQ-for-LLaMa")
EXLLAMA_LOADERS = ("ExLlama", "ExLlama_HF")
EXLLAMAV2_LOADERS = ("ExLlamav2", "ExLlamav2_HF")
EXLLAMAV2_METHODS = ("none",)  # the exllamav2 0.0.3 that webui 1.6.1 pins reads no rope_scaling

_last_plan: Optional[RopePlan] = None


def _warn(message: str) -> None:
    print(f"pntk: warning: {message}", file=sys.stderr, flush=True)


def use_exllama(model_class):
    """Report which exllama model.py the loader imported; hook pntk into it if it is not patched."""
    module = sys.modules[model_class.__module__]
    if exllama.status(module) == exllama.UNPATCHED:
        exllama.install(module)
        _warn(f"exllama {module.__file__}: not patched on disk; pntk runtime hook installed")
    else:
        exllama.report_once(module)
    return module


def _model_path(model_name) -> Path:
    from modules import shared

    return Path(shared.args.model_dir) / model_name


def model_settings(model_name, settings: dict) -> dict:
    """get_model_metadata's result, with max_seq_len and truncation_length defaulting to the
    config's extended length (16384 for airophin) unless models/config-user.yaml sets them."""
    import re

    from modules import shared

    config = _model_path(model_name) / "config.json"
    if not config.is_file():
        return settings
    try:
        plan = RopePlan.from_config(config)
    except ConfigError as exc:
        _warn(f"{exc} (max_seq_len and truncation_length left at the webui defaults)")
        return settings
    user_keys = set()
    for pattern, values in shared.user_config.items():
        if re.match(pattern.lower(), str(model_name).lower()):
            user_keys.update(values)
    for key in ("max_seq_len", "truncation_length"):
        if key not in user_keys:
            settings[key] = plan.extended_max_position_embeddings
    return settings


def _runner_plan(model_path, args, **extra) -> RopePlan:
    """The plan with the webui's overrides: rope_freq_base > 0 replaces the base, else alpha_value."""
    theta = args.rope_freq_base if args.rope_freq_base > 0 else None
    return RopePlan.from_config(
        model_path,
        theta=theta,
        alpha_value=1.0 if theta else args.alpha_value,
        compress_pos_emb=args.compress_pos_emb,
        **extra,
    )


def needs_scaling(plan: RopePlan, args) -> bool:
    return plan.method != "none" or args.compress_pos_emb > 1 or args.alpha_value > 1 or args.rope_freq_base > 0


@contextlib.contextmanager
def loading(loader: str):
    """Around a loader: Transformers 4.31-4.38 read config.json inside it and refuse rope_scaling
    dicts they do not know; they get one without it (after_load applies the scaling)."""
    if loader in TRANSFORMERS_LOADERS:
        from . import transformers as pntk_transformers

        with pntk_transformers.accepting_rope_scaling():
            yield
    else:
        yield


def _hf_model(output):
    """The Transformers model inside a loader's output (AutoGPTQ wraps it as .model)."""
    model = output[0] if isinstance(output, tuple) else output
    inner = getattr(model, "model", None)
    return inner if inner is not None and hasattr(inner, "config") and hasattr(model, "quantize_config") else model


def _raise_autogptq_input_length(model, length: int) -> None:
    """AutoGPTQ's exllama backend sizes an act-order buffer for 2048 input tokens by default; its
    exllama_set_max_input_length (AutoGPTQ >= 0.4.2) refuses models without that backend or act-order."""
    act_order = getattr(getattr(model, "quantize_config", None), "desc_act", False)
    if act_order and any(type(m).__module__.endswith("qlinear_exllama") for m in model.modules()):
        from auto_gptq import exllama_set_max_input_length

        exllama_set_max_input_length(model, length)


def run_loader(load, model_name, loader: str):
    """models.load_model's `load_func_map[loader](model_name)`, with pntk around it."""
    from modules import shared

    path = _model_path(model_name)
    with loading(loader):
        output = load(model_name)
    return after_load(output, path, loader, shared.args)


def after_load(output, model_path: Path, loader: str, args):
    """After a loader: give Transformers-family models pntk's tables, report the plan; returns output."""
    global _last_plan
    _last_plan = None
    if output is None or (isinstance(output, tuple) and output[0] is None):
        return output
    if loader in EXLLAMA_LOADERS:
        model = output[0] if isinstance(output, tuple) else output
        # ExllamaHF keeps the ExLlamaConfig as .ex_config (its .config is Transformers'); ExllamaModel as .config
        _last_plan = exllama.plan_for(getattr(model, "ex_config", None) or model.config)
        return output
    if not (model_path / "config.json").is_file():
        return output
    try:
        plan = _runner_plan(model_path, args)
    except ConfigError as exc:
        _warn(f"{exc} (the {loader} loader runs without pntk)")
        return output
    _last_plan = plan
    if loader in TRANSFORMERS_LOADERS:
        if needs_scaling(plan, args):
            from . import transformers as pntk_transformers

            pntk_transformers.apply(_hf_model(output), plan=plan)
            if loader == "AutoGPTQ":
                _raise_autogptq_input_length(output, plan.max_seq_len)
    elif loader in EXLLAMAV2_LOADERS:
        plan.announce("ExLlamaV2")
        if plan.method not in EXLLAMAV2_METHODS:
            _warn(
                f"{plan.source}: rope_scaling: this model needs RoPE {plan.method}, which ExLlamaV2 lacks; "
                f"outputs past {plan.original_max_position_embeddings} positions will be wrong (use the "
                "ExLlama, ExLlama_HF or Transformers loader, or exllamav2 0.3.2 with pntk's patches/exllamav2)"
            )
    elif needs_scaling(plan, args):
        _warn(f"{plan.source}: loader: {loader} does not use pntk's RoPE tables ({plan.describe()})")
    return output


def menu_note() -> str:
    """The scaling in use, for the model menu's "Successfully loaded" message."""
    if _last_plan is None:
        return ""
    return f"\n\nRoPE: {_last_plan.describe().removeprefix('pntk: RoPE ')}"


# -- runtime hook (pntk.launch): the same calls, wrapped around unpatched webui modules --------

LOADER_FUNCTIONS = {
    "huggingface_loader": "Transformers",
    "AutoGPTQ_loader": "AutoGPTQ",
    "GPTQ_loader": "GPTQ-for-LLaMa",
    "ExLlama_loader": "ExLlama",
    "ExLlama_HF_loader": "ExLlama_HF",
    "ExLlamav2_loader": "ExLlamav2",
    "ExLlamav2_HF_loader": "ExLlamav2_HF",
}


def _hook_exllama_loader(module) -> None:
    use_exllama(module.ExLlama)


def _hook_models(module) -> None:
    # load_model builds load_func_map from these globals at each call
    for name, loader in LOADER_FUNCTIONS.items():
        original = getattr(module, name)
        setattr(module, name, functools.wraps(original)(functools.partial(run_loader, original, loader=loader)))


def _hook_models_settings(module) -> None:
    original = module.get_model_metadata

    @functools.wraps(original)
    def get_model_metadata(model):
        return model_settings(model, original(model))

    module.get_model_metadata = get_model_metadata


def _hook_shared(module) -> None:
    module.settings["truncation_length_max"] = max(module.settings["truncation_length_max"], MAX_SEQ_LEN)


def _hook_ui_model_menu(module) -> None:
    original_wrapper, original_create_ui = module.load_model_wrapper, module.create_ui

    @functools.wraps(original_wrapper)
    def load_model_wrapper(*args, **kwargs):
        for message in original_wrapper(*args, **kwargs):
            yield message + menu_note() if message.startswith("Successfully loaded") else message

    @functools.wraps(original_create_ui)
    def create_ui(*args, **kwargs):
        result = original_create_ui(*args, **kwargs)
        module.shared.gradio["max_seq_len"].maximum = MAX_SEQ_LEN
        return result

    module.load_model_wrapper, module.create_ui = load_model_wrapper, create_ui


def runtime_hooks() -> dict:
    """Module name -> function to run right after that webui module is imported (pntk.launch)."""
    return {
        "modules.shared": _hook_shared,
        "modules.exllama": _hook_exllama_loader,
        "modules.exllama_hf": _hook_exllama_loader,
        "modules.models": _hook_models,
        "modules.models_settings": _hook_models_settings,
        "modules.ui_model_menu": _hook_ui_model_menu,
    }
