"""The CPU side of the CUDA kernels, testable without a GPU: build_info, and the argument checks
the bindings and launchers make before anything reaches the device. Device tensors are
stood in for by tensor views (pntk._tensor.view tuples) with fake device pointers: every
check here must fire before a pointer is used."""
from __future__ import annotations

import pytest
import torch

import pntk
from pntk import _core
from pntk._tensor import DEVICE_CODES, DTYPE_CODES, view

CUDA_BUILD = pntk.build_info()["cuda"]
needs_cuda_build = pytest.mark.skipif(not CUDA_BUILD, reason="pntk was built without CUDA kernels (no nvcc)")


def fake(shape, dtype, *, device="cuda", index=0, strides=None, address=1 << 20):
    """A tensor view of a tensor that does not exist (address is never dereferenced)."""
    if strides is None:
        strides, step = [], 1
        for size in reversed(shape):
            strides.insert(0, step)
            step *= size
    return (address, tuple(shape), tuple(strides), DTYPE_CODES[dtype], DEVICE_CODES[device], index)


# Host g_idx tensors the views below point into (a view does not keep its tensor alive).
G_IDX_TWO = torch.full((256,), 2, dtype=torch.int32)
G_IDX_SHORT = torch.zeros(255, dtype=torch.int32)
G_IDX_FLOAT = torch.zeros(256, dtype=torch.float32)


def gptq_views(k=256, n=128, groups=2):
    return dict(
        qweight=fake((k // 8, n), torch.int32),
        qzeros=fake((groups, n // 8), torch.int32),
        scales=fake((groups, n), torch.float16),
    )


def test_build_info_reports_cuda():
    info = pntk.build_info()
    assert isinstance(info["cuda"], bool)
    assert all(isinstance(arch, int) for arch in info["cuda_archs"])
    if info["cuda"]:
        assert info["cuda_archs"] and min(info["cuda_archs"]) >= 75
        assert hasattr(_core, "Q4CudaTiles") and hasattr(_core, "rope_apply_cuda")
    else:
        assert info["cuda_archs"] == [] and not hasattr(_core, "Q4CudaTiles")


@pytest.mark.skipif(CUDA_BUILD, reason="checks the error of a build without CUDA kernels")
def test_cpu_only_build_says_so():
    from pntk import cuda
    from pntk.q4_cuda import CudaQ4Backend

    with pytest.raises(RuntimeError, match="pntk was built without its CUDA kernels"):
        CudaQ4Backend(torch.zeros(32, 128, dtype=torch.int32), torch.zeros(2, 16, dtype=torch.int32),
                      torch.ones(2, 128, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="pntk was built without its CUDA kernels"):
        cuda.apply_rotary_(torch.zeros(1, 1, 1, 8), torch.zeros(1, 8), torch.zeros(1, 8), 0)


@needs_cuda_build
def test_tile_plan_properties():
    plain = _core.Q4CudaTiles(**gptq_views(256, 128, 2), g_idx_host=None, checkpoint_format="gptq")
    assert (plain.in_features, plain.out_features, plain.padded_in_features) == (256, 128, 256)
    assert plain.identity_rows and plain.device_bytes > 256 * 128 // 2
    g_idx = torch.arange(200, dtype=torch.int64) % 3  # act-order, uneven groups: rows are sorted and padded
    act = _core.Q4CudaTiles(qweight=fake((25, 128), torch.int32), qzeros=fake((3, 16), torch.int32),
                            scales=fake((3, 128), torch.float16), g_idx_host=view(g_idx, "g_idx"),
                            checkpoint_format="gptq_v2")
    assert not act.identity_rows and act.padded_in_features == 3 * 80  # 67, 67, 66 rows -> 80 each


@needs_cuda_build
@pytest.mark.parametrize(
    "change,message",
    [
        (dict(qweight=fake((32, 128), torch.float16)), r"^qweight: must be int32, got float16$"),
        (dict(qweight=fake((32, 128), torch.int32, device="cpu")), r"^qweight: must be a CUDA tensor$"),
        (dict(qweight=fake((32, 128), torch.int32, strides=(1, 32))), r"^qweight: must be contiguous$"),
        (dict(scales=fake((2, 64), torch.float16)), r"^scales: must have shape \[2, 128\], got \[2, 64\]$"),
        (dict(scales=fake((2, 128), torch.float32)), r"^scales: must be float16, got float32$"),
        (dict(scales=fake((2, 128), torch.float16, index=1)), r"^scales: must be on cuda:0, got cuda:1$"),
        (dict(qzeros=fake((2, 15), torch.int32)), r"^qzeros: must have shape \[2, 16\], got \[2, 15\]$"),
        (dict(qzeros=fake((2, 16), torch.int64)), r"^qzeros: must be int32, got int64$"),
        (dict(checkpoint_format="awq"), r'^checkpoint_format: must be "gptq" or "gptq_v2", got "awq"$'),
        (dict(g_idx_host=view(G_IDX_TWO)),
         r"^g_idx: entry 0 is 2, outside \[0, 2\)$"),
        (dict(g_idx_host=view(G_IDX_SHORT)),
         r"^g_idx: must have shape \[256\], got \[255\]$"),
        (dict(g_idx_host=view(G_IDX_FLOAT)),
         r"^g_idx: must be int32 or int64, got float32$"),
        (dict(g_idx_host=fake((256,), torch.int32)), r"^g_idx: must be a CPU copy here$"),
    ],
)
def test_matrix_arguments_are_checked(change, message):
    arguments = dict(**gptq_views(), g_idx_host=None, checkpoint_format="gptq")
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        _core.Q4CudaTiles(**arguments)


@needs_cuda_build
def test_calls_are_checked_before_launch():
    tiles = _core.Q4CudaTiles(**gptq_views(), g_idx_host=None, checkpoint_format="gptq")
    with pytest.raises(ValueError, match=r"^out: must have shape \[256, 128\], got \[128, 256\]$"):
        tiles.dequantize(fake((128, 256), torch.float16), 0)
    with pytest.raises(ValueError, match=r"^storage: pack\(\) must be called first$"):
        tiles.dequantize(fake((256, 128), torch.float16), 0)
    with pytest.raises(ValueError, match=r"^storage: needs \d+ bytes, got 16$"):
        tiles.pack(fake((16,), torch.uint8), 0)
    with pytest.raises(ValueError, match=r"^storage: must be uint8, got int32$"):
        tiles.pack(fake((tiles.device_bytes,), torch.int32), 0)
    with pytest.raises(ValueError, match=r"^storage: must be on cuda:0, got cuda:3$"):
        tiles.pack(fake((tiles.device_bytes,), torch.uint8, index=3), 0)
    with pytest.raises(ValueError, match=r"^rows: must be 1 to 16, got 17$"):
        tiles.gemv_workspace(17)
    assert _core.CUDA_MAX_GEMV_ROWS == 16


@pytest.mark.skipif(not CUDA_BUILD or torch.cuda.is_available(), reason="checks the error when no GPU is visible")
def test_cuda_errors_become_exceptions_with_their_text():
    tiles = _core.Q4CudaTiles(**gptq_views(), g_idx_host=None, checkpoint_format="gptq")
    with pytest.raises(RuntimeError, match=r"^(cudaGetDevice|cudaDeviceGetAttribute): .+ \(cuda\w+\)$"):
        tiles.pack(fake((tiles.device_bytes,), torch.uint8), 0)
    with pytest.raises(RuntimeError, match=r"^(cudaGetDevice|cudaDeviceGetAttribute): .+ \(cuda\w+\)$"):
        tiles.gemv_workspace(1)


@needs_cuda_build
@pytest.mark.parametrize(
    "change,message",
    [
        (dict(x=fake((2, 256), torch.float32), y=fake((2, 128), torch.float32)),
         r"^x: must be float16 or bfloat16 for the GEMV kernel, got float32$"),
        (dict(x=fake((2, 255), torch.float16)), r"^x: must have 256 columns \(in_features\), got shape \[2, 255\]$"),
        (dict(x=fake((2, 256), torch.float16, index=1)), r"^x: must be on cuda:0, got cuda:1$"),
        (dict(y=fake((2, 127), torch.float16)), r"^y: must have shape \[2, 128\], got \[2, 127\]$"),
        (dict(y=fake((2, 128), torch.float32)), r"^y: must be float16, got float32$"),
        (dict(bias=fake((64,), torch.float32)), r"^bias: must have shape \[128\], got \[64\]$"),
        (dict(bias=fake((128,), torch.float16)), r"^bias: must be float32, got float16$"),
        (dict(counters=fake((64,), torch.float32)), r"^counters: must be int32, got float32$"),
        (dict(scratch=fake((64,), torch.int32)), r"^scratch: must be uint8, got int32$"),
        (dict(scratch=fake((64,), torch.uint8, index=2)), r"^scratch: must be on cuda:0, got cuda:2$"),
        ({}, r"^storage: pack\(\) must be called first$"),
    ],
)
def test_gemv_arguments_are_checked(change, message):
    tiles = _core.Q4CudaTiles(**gptq_views(), g_idx_host=None, checkpoint_format="gptq")
    arguments = dict(x=fake((2, 256), torch.float16), y=fake((2, 128), torch.float16), bias=None,
                     counters=fake((64,), torch.int32), scratch=fake((4096,), torch.uint8), stream=0)
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        tiles.gemv(**arguments)


@needs_cuda_build
def test_rope_arguments_are_checked():
    plan = pntk.RopePlan.from_config({"rope_theta": 10000.0, "hidden_size": 512, "num_attention_heads": 4,
                                      "max_position_embeddings": 64})
    cos, sin = fake((64, 128), torch.float16), fake((64, 128), torch.float16, address=1 << 21)
    with pytest.raises(ValueError, match=r"^cos: last dimension must be the rotary dim 128, got shape \[64, 96\]$"):
        _core.rope_table_cuda(plan.core, 0, 0, fake((64, 96), torch.float16), fake((64, 96), torch.float16), 0)
    with pytest.raises(ValueError, match=r"^cos: must be a CUDA tensor$"):
        _core.rope_table_cuda(plan.core, 0, 0, fake((64, 128), torch.float16, device="cpu"), sin, 0)
    with pytest.raises(ValueError, match=r"^sin: must have the dtype of cos$"):
        _core.rope_table_cuda(plan.core, 0, 0, cos, fake((64, 128), torch.float32), 0)
    with pytest.raises(ValueError, match=r"^cos: must be float32, float16 or bfloat16, got int32$"):
        _core.rope_table_cuda(plan.core, 0, 0, fake((64, 128), torch.int32), fake((64, 128), torch.int32), 0)
    with pytest.raises(ValueError, match=r"^first_position: must not be negative$"):
        _core.rope_table_cuda(plan.core, -1, 0, cos, sin, 0)

    x = fake((2, 10, 4, 128), torch.float16, address=1 << 22)
    with pytest.raises(ValueError, match=r"^x: must have 4 dimensions, got shape \[10, 4, 128\]$"):
        _core.rope_apply_cuda(fake((10, 4, 128), torch.float16), cos, sin, None, 0, 0)
    with pytest.raises(ValueError, match=r"^x: must have a unit stride in its last dimension"):
        _core.rope_apply_cuda(fake((2, 10, 4, 128), torch.float16, strides=(1, 2, 20, 80)), cos, sin, None, 0, 0)
    with pytest.raises(ValueError, match=r"^cos: must have the dtype of x \(float16\), got float32$"):
        _core.rope_apply_cuda(x, fake((64, 128), torch.float32), sin, None, 0, 0)
    with pytest.raises(ValueError, match=r"^cos: rotary dim \(last dimension\) must be even and at most head_dim"):
        _core.rope_apply_cuda(fake((2, 10, 4, 64), torch.float16), cos, sin, None, 0, 0)
    with pytest.raises(ValueError, match=r"^positions: 60 to 69 are outside the table \(64 rows\)$"):
        _core.rope_apply_cuda(x, cos, sin, None, 60, 0)
    with pytest.raises(ValueError, match=r"^positions: -1 to 8 are outside the table \(64 rows\)$"):
        _core.rope_apply_cuda(x, cos, sin, None, -1, 0)
    with pytest.raises(ValueError, match=r"^positions: must match x's batch and seq, got shape \[3, 10\]"):
        _core.rope_apply_cuda(x, cos, sin, fake((3, 10), torch.int64), 0, 0)
    with pytest.raises(ValueError, match=r"^positions: must be int32 or int64, got float32$"):
        _core.rope_apply_cuda(x, cos, sin, fake((10,), torch.float32), 0, 0)


@needs_cuda_build
def test_python_wrappers_refuse_cpu_tensors():
    from pntk import cuda
    from pntk.q4_cuda import CudaQ4Backend

    with pytest.raises(ValueError, match=r"^qweight: must be a CUDA tensor, got device cpu$"):
        CudaQ4Backend(torch.zeros(32, 128, dtype=torch.int32), torch.zeros(2, 16, dtype=torch.int32),
                      torch.ones(2, 128, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"^x: must be a CUDA tensor, got device cpu$"):
        cuda.apply_rotary_(torch.zeros(1, 1, 1, 8), torch.zeros(1, 8), torch.zeros(1, 8), 0)
    with pytest.raises(ValueError, match=r"^cos: must be a CUDA tensor, got device cpu$"):
        cuda.write_rope_tables(pntk.RopePlan.from_config({"max_position_embeddings": 8, "hidden_size": 64,
                                                          "num_attention_heads": 1}),
                               torch.zeros(8, 64), torch.zeros(8, 64))
    with pytest.raises(ValueError, match=r"^cos: must be \[rows, rotary_dim\] \(leading dimensions of size 1\)"):
        cuda._table_2d(torch.zeros(2, 8, 64), "cos")
