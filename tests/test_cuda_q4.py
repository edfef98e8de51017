"""GPTQ 4-bit matrices on a CUDA GPU (pntk.q4_cuda), against an fp64 dequantization written
here from the format definition (DESIGN.md) and, when it is in the build, the CPU path.

W[k, n] = scale[g, n] * (q[k, n] - zero[g, n]), g = g_idx[k];
q = (qweight[k // 8, n] >> 4 * (k % 8)) & 15, z = (qzeros[g, n // 8] >> 4 * (n % 8)) & 15,
zero = (z + 1) & 15 ("gptq", v1) or z ("gptq_v2").
"""
from __future__ import annotations

import pytest
import torch

import pntk

# Skipped only without a GPU; with one, a build without CUDA kernels fails these tests.
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU visible (torch.cuda.is_available() is False)")

UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


# -- inputs and the fp64 reference ------------------------------------------------------------

def pack_nibbles(values: torch.Tensor, dim: int) -> torch.Tensor:
    """int 0..15 tensor -> int32, 8 values per word along `dim`, value i at bits 4 * (i % 8)."""
    v = values.to(torch.int64).movedim(dim, -1)
    v = v.reshape(*v.shape[:-1], v.shape[-1] // 8, 8)
    words = (v << (4 * torch.arange(8, dtype=torch.int64))).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words)  # as int32 bit patterns
    return words.to(torch.int32).movedim(-1, dim).contiguous()


def unpack_nibbles(words: torch.Tensor, dim: int) -> torch.Tensor:
    w = words.to(torch.int64).movedim(dim, -1) & 0xFFFFFFFF
    nibbles = (w.unsqueeze(-1) >> (4 * torch.arange(8, dtype=torch.int64))) & 15
    return nibbles.reshape(*w.shape[:-1], w.shape[-1] * 8).movedim(-1, dim)


def make_gptq(generator, k, n, groups, *, act_order=False, uneven=False, v2=False, bias=False):
    """Random GPTQ tensors (CPU). act_order: rows in a random group order; uneven: random g_idx."""
    q = torch.randint(0, 16, (k, n), generator=generator)
    z = torch.randint(0, 16, (groups, n), generator=generator)
    scales = (torch.rand(groups, n, generator=generator) * 0.02 + 0.001).to(torch.float16)
    scales *= torch.where(torch.rand(groups, n, generator=generator) < 0.1, -1.0, 1.0).to(torch.float16)
    if uneven:
        g_idx = torch.randint(0, groups, (k,), generator=generator, dtype=torch.int32)
    else:
        g_idx = (torch.arange(k) * groups // k).to(torch.int32)
        if act_order:
            g_idx = g_idx[torch.randperm(k, generator=generator)]
    tensors = dict(
        qweight=pack_nibbles(q, 0),
        qzeros=pack_nibbles(z, 1),
        scales=scales,
        g_idx=g_idx if (act_order or uneven) else None,
        bias=(torch.randn(n, generator=generator) * 0.1).to(torch.float16) if bias else None,
        checkpoint_format="gptq_v2" if v2 else "gptq",
    )
    return tensors, g_idx


def reference_weight(t, g_idx) -> torch.Tensor:
    """fp64 W [K, N] from the format definition."""
    q = unpack_nibbles(t["qweight"], 0).double()
    z = unpack_nibbles(t["qzeros"], 1)
    zero = z if t["checkpoint_format"] == "gptq_v2" else (z + 1) & 15
    g = g_idx.long()
    return t["scales"].double()[g] * (q - zero.double()[g])


def to_device(t, device):
    return {key: (v.to(device) if isinstance(v, torch.Tensor) else v) for key, v in t.items()}


def backend(t):
    from pntk.q4_cuda import CudaQ4Backend

    return CudaQ4Backend(**to_device(t, "cuda"))


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, what: str):
    actual = actual.double().cpu()
    error = (actual - expected).abs()
    ok = error <= bound  # NaN compares False
    assert bool(ok.all()), (
        f"{what}: {int((~ok).sum())} of {ok.numel()} outside the bound; worst error "
        f"{float(torch.nan_to_num(error - bound, nan=float('inf')).max()):.3g} over it"
    )


def gemv_bound(x64, w64, expected, dtype=torch.float16, weights_rounded=False):
    """Weights exact (the GEMV scales a group's sums, not the weights; the matmul path for more
    rows rounds each weight once to dtype: weights_rounded), fp32 sums (tensor cores may
    truncate: one fp32 ulp per 16-long step and per group, relative to |x| @ |W|), y rounded
    once to dtype."""
    magnitude = x64.abs() @ w64.abs()
    steps = x64.shape[1] / 8 + 16
    weight_error = UNIT_ROUNDOFF[dtype] * magnitude if weights_rounded else 0.0
    return weight_error + steps * 2.0**-23 * magnitude + UNIT_ROUNDOFF[dtype] * expected.abs() + 1e-6


CASES = [
    # k, n, groups, layout                      what it exercises
    (256, 192, 8, "in_order"),                  # group 32, identity rows, direct x
    (1024, 320, 8, "act_order"),                # group 128, act-order gather
    (512, 64, 1, "in_order"),                   # one group (group_size -1), one strip, split-K
    (200, 200, 4, "uneven"),                    # K, N not multiples of 16 / 64, uneven groups
    (8192, 128, 64, "act_order"),               # long K: many splits
]


@pytest.mark.parametrize("v2", [False, True], ids=["gptq", "gptq_v2"])
@pytest.mark.parametrize("k,n,groups,layout", CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dequantize_is_the_exactly_rounded_weight(generator, k, n, groups, layout, v2, dtype):
    t, g_idx = make_gptq(generator, k, n, groups, act_order=layout == "act_order", uneven=layout == "uneven", v2=v2)
    w = backend(t).dequantize(dtype)
    assert w.shape == (k, n) and w.dtype == dtype and w.device.type == "cuda"
    expected = reference_weight(t, g_idx).to(dtype)  # exact in fp64, rounded once
    assert torch.equal(w.cpu(), expected), f"{int((w.cpu() != expected).sum())} weights differ"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9, 16])
@pytest.mark.parametrize("k,n,groups,layout", CASES)
def test_gemv_matches_fp64(generator, k, n, groups, layout, rows, dtype):
    t, g_idx = make_gptq(generator, k, n, groups, act_order=layout == "act_order", uneven=layout == "uneven",
                         bias=rows % 2 == 1)
    w64 = reference_weight(t, g_idx)
    x = torch.randn(rows, k, generator=generator).to(dtype)
    y = backend(t)(x.cuda())
    assert y.shape == (rows, n) and y.dtype == dtype
    x64 = x.double()
    expected = x64 @ w64 + (t["bias"].double() if t["bias"] is not None else 0)
    assert_within(y, expected, gemv_bound(x64, w64, expected, dtype), f"{dtype} y [{rows}, {n}]")


@pytest.mark.parametrize("layout", ["in_order", "act_order"])
def test_gemv_with_the_largest_staged_x(generator, layout):
    # 300 strips and K = 960 (60 k-tiles): one split per strip, so each block stages all of x
    # in shared memory, up to the most the kernel allows (16 rows x 60 tiles); one row gathers
    # act-order x in the blocks, 2 and more permute it first.
    t, g_idx = make_gptq(generator, 960, 300 * 64, 30, act_order=layout == "act_order", bias=True)
    layer = backend(t)
    w64 = reference_weight(t, g_idx)
    for rows in (1, 2, 3, 16):
        x = torch.randn(rows, 960, generator=generator).to(torch.float16)
        x64 = x.double()
        expected = x64 @ w64 + t["bias"].double()
        assert_within(layer(x.cuda()), expected, gemv_bound(x64, w64, expected), f"{layout} rows {rows}")


def test_gemv_calls_of_other_matrices_leave_the_split_counters_alone(generator):
    # Split-K partial sums and the per-strip counters live in separate buffers shared by all
    # matrices on a stream: a narrow matrix with many splits and 16 rows writes partial sums
    # over the bytes where a wide matrix (300 strips, 2 splits) keeps its counters, in any
    # single-buffer layout that puts each matrix's partials right after its own counters.
    narrow, narrow_g = make_gptq(generator, 8192, 64, 64)
    wide, wide_g = make_gptq(generator, 512, 300 * 64, 4)
    narrow_layer, wide_layer = backend(narrow), backend(wide)
    x_narrow = torch.randn(16, 8192, generator=generator).to(torch.float16)
    x_wide = torch.randn(1, 512, generator=generator).to(torch.float16)
    w64 = reference_weight(wide, wide_g)
    expected = x_wide.double() @ w64
    for _ in range(3):
        narrow_layer(x_narrow.cuda())
        y = wide_layer(x_wide.cuda())
        assert_within(y, expected, gemv_bound(x_wide.double(), w64, expected), "wide matrix after the narrow one")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [17, 64])
def test_matmul_path_for_many_rows(generator, dtype, rows):
    t, g_idx = make_gptq(generator, 1024, 320, 8, act_order=True, bias=True)
    w64 = reference_weight(t, g_idx)
    x = torch.randn(rows, 1024, generator=generator).to(dtype)
    y = backend(t)(x.cuda())
    assert y.shape == (rows, 320) and y.dtype == dtype
    x64 = x.double()
    expected = x64 @ w64 + t["bias"].double()
    eps = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-11}[dtype]  # fp32: fp16-rounded bias
    magnitude = x64.abs() @ w64.abs()
    bound = 4 * eps * (magnitude + expected.abs()) + 1e-5
    assert_within(y, expected, bound, f"{dtype} y [{rows}, 320]")


def test_gemv_is_deterministic_and_reuses_its_workspace(generator):
    t, _ = make_gptq(generator, 8192, 128, 64, act_order=True)
    layer = backend(t)
    x = torch.randn(3, 8192, generator=generator).to(torch.float16).cuda()
    first = layer(x)
    for _ in range(3):
        assert torch.equal(layer(x), first)  # split-K sums in a fixed order; counters reset


def test_gemv_takes_strided_x_and_runs_on_the_current_stream(generator):
    t, g_idx = make_gptq(generator, 512, 128, 4)
    layer = backend(t)
    wide = torch.randn(4, 1024, generator=generator).to(torch.float16).cuda()
    x = wide[:, ::2]  # column stride 2: gathered
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # x was made on the default stream
    with torch.cuda.stream(stream):
        y = layer(x)
    stream.synchronize()
    assert torch.equal(y, layer(x.contiguous()))  # the gathered copy feeds the same kernel
    x64, w64 = x.double().cpu(), reference_weight(t, g_idx)
    assert_within(y, x64 @ w64, gemv_bound(x64, w64, x64 @ w64), "strided x")


def test_gpu_and_cpu_paths_agree(generator):
    if not hasattr(pntk, "Q4Matrix"):
        pytest.skip("the CPU path (pntk.Q4Matrix) is not part of this build")
    t, g_idx = make_gptq(generator, 1024, 256, 32, act_order=True, bias=True)
    cpu = pntk.Q4Matrix.from_gptq(**t)
    gpu = pntk.Q4Matrix.from_gptq(**to_device(t, "cuda"))
    assert torch.equal(gpu.dequantize(torch.float32).cpu(), cpu.dequantize(torch.float32))
    for rows in (1, 16, 33):
        x = torch.randn(rows, 1024, generator=generator).to(torch.float16)
        y_cpu, y_gpu = cpu(x), gpu(x.cuda()).cpu()
        x64, w64 = x.double(), reference_weight(t, g_idx)
        bound = 2 * gemv_bound(x64, w64, x64 @ w64, weights_rounded=rows > 16)  # each within it of fp64
        assert_within(y_gpu, y_cpu.double(), bound, f"rows {rows}: GPU vs CPU")


def test_bad_input_names_the_tensor(generator):
    t, _ = make_gptq(generator, 256, 128, 2)
    layer = backend(t)
    with pytest.raises(ValueError, match=r"^x: must have shape \[M, 256\]"):
        layer(torch.zeros(2, 128, dtype=torch.float16, device="cuda"))
    with pytest.raises(ValueError, match=r"^x: must be on cuda"):
        layer(torch.ones(2, 256, dtype=torch.float16))
    bad = to_device(t, "cuda")
    bad["scales"] = bad["scales"].float()
    from pntk.q4_cuda import CudaQ4Backend

    with pytest.raises(ValueError, match=r"^scales: must be float16, got float32"):
        CudaQ4Backend(**bad)
    bad = to_device(t, "cuda")
    bad["g_idx"] = torch.full((256,), 2, dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match=r"^g_idx: entry 0 is 2, outside \[0, 2\)"):
        CudaQ4Backend(**bad)
