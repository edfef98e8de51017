"""GPTQ 4-bit matrices on a CUDA device (the backend of pntk.Q4Matrix for CUDA tensors).

The compiled core tiles the matrix once, at construction, on the tensors' device; every call
runs there, on torch's current stream of that device:

* x with at most ``pntk._core.CUDA_MAX_GEMV_ROWS`` (16) rows, fp16 (or bf16 on compute
  capability 8.0+): the q4 GEMV kernel (weights read once, tensor cores, each weight exact,
  fp32 sums, y rounded once);
* otherwise: the weights are dequantized to x's dtype and multiplied by torch.matmul (cuBLAS),
  so a prefill runs at dense-GEMM speed.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _core
from ._tensor import view
from .cuda import current_stream, require_cuda_build

__all__ = ["CudaQ4Backend"]

# GEMV workspaces, one pair per (device, stream), shared by every matrix (launches on one
# stream are ordered): int32 split-K counters, zero-filled when made (the kernels leave them
# at zero), and a scratch buffer (partial sums, x in padded row order). Apart, so that partial
# sums never land on counters.
_counters: dict[tuple[int, int], torch.Tensor] = {}
_scratch: dict[tuple[int, int], torch.Tensor] = {}


def _buffer(buffers: dict, key: tuple[int, int], nbytes: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    buffer = buffers.get(key)
    elements = max(1, -(-nbytes // dtype.itemsize))
    if buffer is None or buffer.numel() < elements:
        buffer = torch.zeros(elements, dtype=dtype, device=device)
        buffers[key] = buffer
    return buffer


class CudaQ4Backend:
    """A GPTQ linear layer tiled for the CUDA kernels.

    Arguments (CUDA tensors on one device, already validated by pntk.Q4Matrix):
      qweight int32 [K/8, N], qzeros int32 [G, N/8], scales fp16 [G, N],
      g_idx int [K] or None (row k in group k // (K / G)), bias [N] or None,
      checkpoint_format "gptq" (zero = (z + 1) & 15) or "gptq_v2" (zero = z).
    Groups may be uneven and in any order (act-order); the kernels need no equal group sizes.
    """

    def __init__(
        self,
        qweight: torch.Tensor,
        qzeros: torch.Tensor,
        scales: torch.Tensor,
        g_idx: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
        checkpoint_format: str = "gptq",
    ):
        require_cuda_build()
        stream = current_stream(qweight, "qweight")
        self.device = qweight.device
        g_idx_host = None if g_idx is None else g_idx.detach().to("cpu").contiguous()  # alive during the call
        self._tiles = _core.Q4CudaTiles(
            view(qweight, "qweight"),
            view(qzeros, "qzeros"),
            view(scales, "scales"),
            None if g_idx_host is None else view(g_idx_host, "g_idx"),
            checkpoint_format,
        )
        self.in_features = self._tiles.in_features
        self.out_features = self._tiles.out_features
        self._storage = torch.empty(self._tiles.device_bytes, dtype=torch.uint8, device=self.device)
        self._tiles.pack(view(self._storage, "storage"), stream)
        if bias is not None and (bias.device != self.device or bias.shape != (self.out_features,)):
            raise ValueError(f"bias: must be [{self.out_features}] on {self.device}, got {tuple(bias.shape)} on {bias.device}")
        self.bias = bias
        self._bias_f32 = None if bias is None else bias.detach().to(torch.float32).contiguous()
        self._bias_view = None if bias is None else view(self._bias_f32, "bias")
        self._gemv_dtypes = (torch.float16, torch.bfloat16) if self._tiles.gemv_takes_bfloat16() else (torch.float16,)
        self._workspace_bytes = [self._tiles.gemv_workspace(rows) for rows in range(1, _core.CUDA_MAX_GEMV_ROWS + 1)]

    def forward(self, x2d: torch.Tensor) -> torch.Tensor:
        """x [M, K] fp16/bf16/fp32 on this device -> [M, N] in x's dtype."""
        if x2d.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"x: must be float16, bfloat16 or float32, got {x2d.dtype}")
        if x2d.dim() != 2 or x2d.shape[1] != self.in_features:
            raise ValueError(f"x: must have shape [M, {self.in_features}], got {tuple(x2d.shape)}")
        if x2d.device != self.device:
            raise ValueError(f"x: must be on {self.device}, got {x2d.device}")
        rows = x2d.shape[0]
        if rows == 0:
            return x2d.new_empty(0, self.out_features)
        if rows <= _core.CUDA_MAX_GEMV_ROWS and x2d.dtype in self._gemv_dtypes:
            stream = current_stream(x2d, "x")
            y = torch.empty(rows, self.out_features, dtype=x2d.dtype, device=self.device)
            counter_bytes, scratch_bytes = self._workspace_bytes[rows - 1]
            key = (self.device.index, stream)
            counters = _buffer(_counters, key, counter_bytes, torch.int32, self.device)
            scratch = _buffer(_scratch, key, scratch_bytes, torch.uint8, self.device)
            self._tiles.gemv(view(x2d, "x"), view(y, "y"), self._bias_view, view(counters, "counters"),
                             view(scratch, "scratch"), stream)
            return y
        y = torch.matmul(x2d, self.dequantize(x2d.dtype))
        if self.bias is not None:
            y += self.bias.to(y.dtype)
        return y

    __call__ = forward

    def dequantize(self, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        """W [K, N] = scale * (q - zero) in `dtype` (float16, bfloat16, float32), original row order."""
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"dtype: must be float16, bfloat16 or float32, got {dtype}")
        out = torch.empty(self.in_features, self.out_features, dtype=dtype, device=self.device)
        self._tiles.dequantize(view(out, "out"), current_stream(out, "out"))
        return out
