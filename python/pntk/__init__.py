"""pntk: RoPE scaling (partial NTK, YaRN, ...) and 4-bit GPTQ kernels for Llama runners."""
from ._core import ConfigError
from ._core import __version__
from .rope import RopePlan
from .gptq import load_gptq, quantize_gptq
from .q4 import Q4Matrix, get_num_threads, set_num_threads, set_thread_runtime

__all__ = ["ConfigError", "RopePlan", "__version__", "build_info"]
__all__ += ["Q4Matrix", "load_gptq", "quantize_gptq", "set_num_threads", "get_num_threads", "set_thread_runtime"]


def build_info() -> dict:
    """What this build contains: version, cpu_kernel, cuda (bool), cuda_archs (list of int)."""
    from ._core import build_info as _build_info

    return dict(_build_info())
