"""RoPE on a CUDA device: a plan's cos/sin tables written in place on the device, and the
in-place rotary embedding (NeoX / Hugging Face "rotate half" layout). Both run on the
tensors' device, on torch's current stream there."""
from __future__ import annotations

from typing import Optional, Union

import torch

from . import _core
from ._tensor import view

__all__ = ["apply_rotary_", "write_rope_tables"]


def require_cuda_build() -> None:
    """RuntimeError unless this build of pntk has its CUDA kernels."""
    if not _core.build_info()["cuda"]:
        raise RuntimeError(
            "pntk was built without its CUDA kernels (pntk.build_info()['cuda'] is False): "
            "rebuild it where nvcc is found"
        )


def current_stream(tensor: torch.Tensor, name: str) -> int:
    """torch's current stream on the tensor's device, as the integer the kernels take."""
    if tensor.device.type != "cuda":
        raise ValueError(f"{name}: must be a CUDA tensor, got device {tensor.device}")
    return torch.cuda.current_stream(tensor.device).cuda_stream


def write_rope_tables(
    plan, cos: torch.Tensor, sin: torch.Tensor, *, first_position: int = 0, inv_freq_seq_len: Optional[int] = None
) -> None:
    """Fill device tables in place from a RopePlan (or its core plan).

    cos, sin: contiguous CUDA tensors [..., rows, rotary_dim] (e.g. ExLlama's [1, 1, seq, d]),
    float32/float16/bfloat16; row r holds position first_position + r. inv_freq_seq_len is the
    sequence length a dynamic plan is evaluated at (default: the plan's own choice).
    """
    require_cuda_build()
    core_plan = getattr(plan, "core", plan)
    stream = current_stream(cos, "cos")
    _core.rope_table_cuda(
        core_plan, int(first_position), int(inv_freq_seq_len or 0), view(cos, "cos"), view(sin, "sin"), stream
    )


def _table_2d(table: torch.Tensor, name: str) -> torch.Tensor:
    if table.dim() <= 2:
        return table
    if any(size != 1 for size in table.shape[:-2]):
        raise ValueError(f"{name}: must be [rows, rotary_dim] (leading dimensions of size 1), got {tuple(table.shape)}")
    return table.reshape(table.shape[-2], table.shape[-1])


def apply_rotary_(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: Union[int, torch.Tensor] = 0
) -> torch.Tensor:
    """Rotate x [batch, seq, heads, head_dim] in place and return it.

    cos, sin: [rows, rotary_dim] tables in x's dtype (any leading dimensions of size 1, as in
    ExLlama's [1, 1, rows, d], are dropped). positions: the position of x[:, 0] (an int; row s
    is then at positions + s), or an int32/int64 CUDA tensor [seq] or [batch, seq]. Every
    position must have a table row, else ValueError (before x is changed). Dimensions past
    rotary_dim are left alone; x may be a strided view, e.g. q.transpose(1, 2).
    """
    require_cuda_build()
    stream = current_stream(x, "x")
    cos2d, sin2d = _table_2d(cos, "cos"), _table_2d(sin, "sin")
    if isinstance(positions, torch.Tensor):
        _core.rope_apply_cuda(view(x, "x"), view(cos2d, "cos"), view(sin2d, "sin"), view(positions, "positions"), 0, stream)
    else:
        _core.rope_apply_cuda(view(x, "x"), view(cos2d, "cos"), view(sin2d, "sin"), None, int(positions), stream)
    return x
