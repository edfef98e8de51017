"""Stand-in for modules/models.py: load_model dispatches through a table of module-level loaders."""
from pathlib import Path

import torch

from modules import shared


def huggingface_loader(model_name):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(Path(shared.args.model_dir) / model_name, dtype=torch.float32)


def _unused_loader(model_name):
    raise RuntimeError("not in the stand-in")


AutoGPTQ_loader = GPTQ_loader = ExLlama_loader = ExLlama_HF_loader = _unused_loader
ExLlamav2_loader = ExLlamav2_HF_loader = _unused_loader


def load_model(model_name, loader=None):
    load_func_map = {
        "Transformers": huggingface_loader,
        "AutoGPTQ": AutoGPTQ_loader,
        "GPTQ-for-LLaMa": GPTQ_loader,
        "ExLlama": ExLlama_loader,
        "ExLlama_HF": ExLlama_HF_loader,
        "ExLlamav2": ExLlamav2_loader,
        "ExLlamav2_HF": ExLlamav2_HF_loader,
    }
    return load_func_map[loader](model_name)
