"""Tensor views for pntk._core: torch tensors cross into C++ as plain tuples
(data_ptr, shape, strides, dtype code, device type, device index), so the compiled
module never links against libtorch and works with any torch version."""
import torch

# Codes of pntk::DType (exllama_ext/core/tensor_view.h).
DTYPE_CODES = {
    torch.float32: 0,
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.int32: 3,
    torch.int64: 4,
    torch.uint8: 5,
    torch.int8: 6,
}
# Codes of pntk::TableDtype (exllama_ext/core/rope_table.h).
TABLE_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
DEVICE_CODES = {"cpu": 0, "cuda": 1}


def view(tensor: torch.Tensor, name: str = "tensor") -> tuple:
    """The tuple pntk._core accepts as a TensorView. Raises ValueError naming `name`.
    (Runs on every matmul call: it reads tensor.device, about 0.25 us, only off the CPU.)"""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name}: must be a torch.Tensor, got {type(tensor).__name__}")
    dtype_code = DTYPE_CODES.get(tensor.dtype)
    if dtype_code is None:
        raise ValueError(f"{name}: dtype {tensor.dtype} is not supported")
    if tensor.is_cpu:
        device_code, device_index = 0, 0
    elif tensor.is_cuda:
        device_code, device_index = 1, tensor.get_device()
    else:
        raise ValueError(f"{name}: device {tensor.device} is not supported")
    return (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), dtype_code, device_code, device_index)


def new_cpu_matrix_view(tensor: torch.Tensor, rows: int, columns: int, dtype_code: int) -> tuple:
    """view() of the [rows, columns] tensor that the caller has just made with torch.empty on the
    CPU (contiguous, of the dtype with code `dtype_code`), without view()'s checks and lookups:
    the q4 matmul's output, made on every decode call, where view() took about 0.4 us."""
    return (tensor.data_ptr(), (rows, columns), (columns, 1), dtype_code, 0, 0)  # device code 0: CPU
