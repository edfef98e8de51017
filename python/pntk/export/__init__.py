"""`pntk export`: the model's RoPE plan in the form today's engines read without any patch.

- hf:   config.json with rope type "longrope" (Transformers 5, vLLM; ExLlamaV2 with pntk's hook)
- gguf: a GGUF copy with llama.cpp's per-dimension `rope_freqs` factors
The factors come from the C++ core (pntk._core.frequency_factors); nothing here computes RoPE.
"""
from .gguf import GgufExport, export_gguf
from .hf import HfExport, export_hf

__all__ = ["GgufExport", "HfExport", "export_gguf", "export_hf"]
