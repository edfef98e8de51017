"""Q4Matrix: a GPTQ 4-bit weight matrix W [in_features K, out_features N] that computes
y = x @ W + bias. The CPU path is pntk._core (AVX-512 / AVX2 / NEON / scalar kernels picked at
run time); a matrix built from CUDA tensors uses pntk.q4_cuda.CudaQ4Backend.

GPTQ tensors (see DESIGN.md):
  qweight int32 [K/8, N]; qzeros int32 [groups, N/8]; scales float16 [groups, N];
  g_idx int32 [K] (optional: rows k // (K/groups)); bias float16/bfloat16/float32 [N] (optional).
K % 8 == 0 and N % 8 == 0. checkpoint_format "gptq" (zeros stored minus one) or "gptq_v2".
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _core
from ._tensor import new_cpu_matrix_view, view

__all__ = ["Q4Matrix", "CpuQ4Backend", "set_num_threads", "get_num_threads", "set_thread_runtime", "cpu_kernels",
           "cpu_kernel_families", "set_cpu_kernel"]


def _optional_view(tensor: Optional[torch.Tensor], name: str):
    return None if tensor is None else view(tensor, name)


def set_num_threads(threads: int) -> None:
    """Threads used by the CPU kernels (default: all cores)."""
    _core.set_num_threads(int(threads))


def get_num_threads() -> int:
    return _core.get_num_threads()


def set_thread_runtime(runtime: str) -> None:
    """The threads the CPU kernels run on: "openmp" (the process's OpenMP runtime, torch's,
    whose threads otherwise spin beside pntk's after each torch operator), "pntk" (pntk's own
    pool) or "auto" (openmp when one is loaded and OMP_WAIT_POLICY is not passive). The default
    comes from the environment variable PNTK_CPU_THREADS (auto); build_info()["cpu_threads"]
    says which is in use."""
    _core.set_thread_runtime(str(runtime))


def cpu_kernels() -> list:
    """CPU kernel families this CPU can run, best first (e.g. ['avx512vnni', 'avx512bf16', 'avx512', 'avx2', 'scalar'],
    ['neon', 'scalar'] on aarch64)."""
    return list(_core.q4_cpu_kernels())


def cpu_kernel_families() -> list:
    """Every CPU kernel family built into this module, best first, as dicts: name, requires (the
    CPU features it needs, as /proc/cpuinfo names them), available (this CPU runs it, so it is in
    cpu_kernels()) and reason ("" if available, else e.g. "avx512bf16: this CPU lacks avx512_bf16")."""
    families = []
    for family in _core.q4_cpu_kernel_families():
        name, missing = family["name"], list(family["missing"])
        families.append({"name": name, "requires": list(family["requires"]), "available": not missing,
                         "reason": f"{name}: this CPU lacks {', '.join(missing)}" if missing else ""})
    return families


def set_cpu_kernel(name: str) -> None:
    """Pick the CPU kernel family (tests, benchmarks); ValueError names the available ones."""
    _core.q4_set_cpu_kernel(name)


class CpuQ4Backend:
    """The CPU backend: packs the GPTQ tensors once (they are copied, not kept)."""

    def __init__(self, qweight, qzeros, scales, g_idx, bias, checkpoint_format):
        self._matrix = _core.Q4MatrixCpu(
            view(qweight, "qweight"),
            view(qzeros, "qzeros"),
            view(scales, "scales"),
            _optional_view(g_idx, "g_idx"),
            _optional_view(bias, "bias"),
            checkpoint_format,
        )
        self.shape = dict(self._matrix.shape)

    @property
    def storage_bytes(self) -> int:
        return self._matrix.storage_bytes

    def forward(self, x2d: torch.Tensor) -> torch.Tensor:
        """[M, K] -> [M, N] in x's dtype (bias included)."""
        x_view = view(x2d, "x")
        rows, columns = x_view[1][0], self.shape["out_features"]
        out = torch.empty(rows, columns, dtype=x2d.dtype)
        self._matrix.forward(x_view, new_cpu_matrix_view(out, rows, columns, x_view[3]))  # [3]: x's dtype code
        return out

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """W [K, N] in the original row order."""
        out = torch.empty(self.shape["in_features"], self.shape["out_features"], dtype=dtype)
        self._matrix.dequantize(view(out, "dtype"))
        return out


class Q4Matrix:
    """A GPTQ 4-bit matrix. Build it with :meth:`from_gptq`; ``w(x)`` for x [..., K]."""

    def __init__(self, backend, shape: dict):
        self._backend = backend
        self._shape = shape

    @classmethod
    def from_gptq(
        cls,
        qweight: torch.Tensor,
        qzeros: torch.Tensor,
        scales: torch.Tensor,
        g_idx: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
        checkpoint_format: str = "gptq",
    ) -> "Q4Matrix":
        """Validate and pack GPTQ tensors (all on the CPU, or all on one CUDA device).

        Raises ValueError naming the tensor at fault (dtype, shape, g_idx range, ...).
        """
        if not isinstance(qweight, torch.Tensor):
            raise ValueError(f"qweight: must be a torch.Tensor, got {type(qweight).__name__}")
        if qweight.is_cuda:
            # the CPU copy of g_idx must outlive the call: the view holds only its pointer
            g_idx_cpu = None if g_idx is None else g_idx.cpu()
            shape = dict(
                _core.validate_gptq(
                    view(qweight, "qweight"), view(qzeros, "qzeros"), view(scales, "scales"),
                    _optional_view(g_idx_cpu, "g_idx"), _optional_view(bias, "bias"), checkpoint_format,
                )
            )
            try:
                from .q4_cuda import CudaQ4Backend
            except ImportError as exc:
                raise ValueError(f"qweight: is a CUDA tensor, but this build of pntk has no CUDA path ({exc})") from None
            return cls(CudaQ4Backend(qweight, qzeros, scales, g_idx, bias, checkpoint_format), shape)
        backend = CpuQ4Backend(qweight, qzeros, scales, g_idx, bias, checkpoint_format)
        return cls(backend, backend.shape)

    @property
    def in_features(self) -> int:
        return self._shape["in_features"]

    @property
    def out_features(self) -> int:
        return self._shape["out_features"]

    @property
    def group_size(self) -> int:
        """Rows per group (K / groups); -1 for a single group; 0 when g_idx makes groups uneven."""
        return self._shape["group_size"]

    @property
    def act_order(self) -> bool:
        """True when g_idx is not sorted (GPTQ desc_act)."""
        return self._shape["act_order"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """y [..., N] = x [..., K] @ W + bias, in x's dtype (fp16, bf16 or fp32), fp32 accumulation."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x: must be a torch.Tensor, got {type(x).__name__}")
        k = self._shape["in_features"]
        if x.dim() == 0 or x.shape[-1] != k:
            raise ValueError(f"x: last dimension must be in_features = {k}, got shape {list(x.shape)}")
        if x.dim() == 2:  # the common decode shape: no reshapes (about 1.6 us of a call)
            return self._backend.forward(x)
        y = self._backend.forward(x.reshape(-1, k))
        return y.reshape(*x.shape[:-1], self._shape["out_features"])

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W [K, N] in the original row order (values exact in float32)."""
        return self._backend.dequantize(dtype)

    def __repr__(self) -> str:
        return (
            f"Q4Matrix(in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, act_order={self.act_order})"
        )
