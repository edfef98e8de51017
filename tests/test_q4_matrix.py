"""pntk.Q4Matrix against the float64 GPTQ reference (gptq_reference.py), for every CPU kernel family
built into the module (those this CPU lacks skipped, saying which features it lacks) and on a CUDA
device (skipped, saying so, where no GPU is visible), for every format, group size, act-order and
activation dtype."""
import contextlib
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

import pntk
from pntk import q4

import gptq_reference as ref

K, N = 384, 136  # N = 2 full 64-column tiles + 8 columns: the narrow-tile (masked) path
ROWS = (1, 2, 3, 8, 17, 64)  # GEMV (<= 16) and GEMM rows
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
KERNELS = q4.cpu_kernels()
FAMILIES = q4.cpu_kernel_families()  # every family built in, KERNELS those this CPU runs


@contextlib.contextmanager
def cpu_kernel(name):
    """CPU q4 matmuls run on kernel `name` inside the block."""
    previous = pntk._core.q4_cpu_kernel()
    q4.set_cpu_kernel(name)
    try:
        yield
    finally:
        q4.set_cpu_kernel(previous)


def skip_unless_this_cpu_runs(name):
    """Skips the test, saying which CPU features are missing, where this CPU cannot run family `name`."""
    family = next(f for f in FAMILIES if f["name"] == name)
    if not family["available"]:
        pytest.skip(family["reason"])


@pytest.fixture(params=[f"cpu-{f['name']}" for f in FAMILIES] + ["cuda"])
def device(request):
    """The device the matrix runs on; on the CPU, each kernel family in turn (skipped where this
    machine cannot run it)."""
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA GPU visible (torch.cuda.is_available() is False)")
        yield "cuda"
        return
    name = request.param.removeprefix("cpu-")
    skip_unless_this_cpu_runs(name)
    with cpu_kernel(name):
        yield "cpu"


def on(device, tensors: dict) -> dict:
    return {name: None if t is None else t.to(device) for name, t in tensors.items()}


def check_forward(w, tensors, checkpoint_format, dtype, rng, device="cpu", rows=ROWS, bias=None):
    w64 = ref.dequantize(tensors["qweight"], tensors["qzeros"], tensors["scales"], tensors["g_idx"], checkpoint_format)
    for m in rows:
        x = torch.from_numpy(rng.standard_normal((m, w.in_features)).astype(np.float32)).to(dtype)
        y = w(x.to(device))
        assert y.dtype == dtype and y.shape == (m, w.out_features) and y.device.type == device
        error = ref.relative_error(y.cpu(), ref.matmul(x, w64, bias))
        assert error <= ref.TOLERANCE[dtype], f"M={m} {dtype}: relative error {error:.3g}"


def act_order_matrix(device, tensors):
    """The matrix on `device` and its float64 weight, from `tensors` (random_gptq's output)."""
    return pntk.Q4Matrix.from_gptq(**on(device, tensors)), ref.dequantize(**tensors)


def error_and_output_rounding(w, w64, x, device):
    """Relative error of w(x) against float64, and that of rounding the exact y once to x's dtype."""
    expected = ref.matmul(x, w64)
    rounding = ref.relative_error(torch.from_numpy(expected).to(x.dtype), expected)
    return ref.relative_error(w(x.to(device)).cpu(), expected), rounding


@pytest.mark.parametrize("checkpoint_format", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("group_size", [32, 64, 128, 24, -1])  # 24: a divisor of K that is no power of 2
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("sym", [False, True])
def test_forward_matches_fp64_reference(device, checkpoint_format, group_size, act_order, sym, rng):
    groups = 1 if group_size == -1 else K // group_size
    tensors = ref.random_gptq(K, N, groups, rng, act_order=act_order, sym=sym, checkpoint_format=checkpoint_format)
    w = pntk.Q4Matrix.from_gptq(**on(device, tensors), checkpoint_format=checkpoint_format)
    # one group (-1) has nothing to reorder: g_idx is all zeros
    assert (w.in_features, w.out_features, w.group_size, w.act_order) == (K, N, group_size, act_order and groups > 1)
    for dtype in DTYPES:
        check_forward(w, tensors, checkpoint_format, dtype, rng, device)


@pytest.mark.parametrize("dtype", DTYPES)
def test_uneven_groups_and_bias(device, dtype, rng):
    # g_idx with random group sizes (not multiples of 8), 5 groups over K = 200 rows
    k, n = 200, 72
    tensors = ref.random_gptq(k, n, 5, rng, uneven=True)
    bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).to(dtype)
    w = pntk.Q4Matrix.from_gptq(**on(device, tensors), bias=bias.to(device), checkpoint_format="gptq_v2")
    assert w.group_size == 0 and w.act_order
    check_forward(w, tensors, "gptq_v2", dtype, rng, device, bias=bias)


def test_rows_beyond_one_gemm_row_block(device, rng):
    tensors = ref.random_gptq(K, 72, 12, rng, act_order=True)
    w = pntk.Q4Matrix.from_gptq(**on(device, tensors))
    x = torch.from_numpy(rng.standard_normal((600, K)).astype(np.float32))[::2]  # 300 rows, row stride 2K
    expected = ref.matmul(x, ref.dequantize(**tensors))
    assert ref.relative_error(w(x.to(device)).cpu(), expected) <= ref.TOLERANCE[torch.float32]
    assert w(x[:0].to(device)).shape == (0, 72)


def test_dequantize_is_exact_in_original_row_order(rng):
    tensors = ref.random_gptq(K, N, 12, rng, act_order=True)
    w = pntk.Q4Matrix.from_gptq(**tensors)
    expected = ref.dequantize(**tensors, checkpoint_format="gptq")
    assert np.array_equal(w.dequantize().numpy().astype(np.float64), expected)
    half = w.dequantize(torch.float16)
    assert half.dtype == torch.float16
    assert torch.equal(half, torch.from_numpy(expected).to(torch.float16))


def test_holds_only_packed_weights_scales_zeros_and_permutation(rng):
    groups = 12
    w = pntk.Q4Matrix.from_gptq(**ref.random_gptq(K, N, groups, rng, act_order=True))
    packed_weights, scales, zeros = K * N // 2, groups * N * 2, groups * N // 2
    permutation = K * 4 + (groups + 1) * 8  # packed row -> row, group starts
    assert w._backend.storage_bytes == packed_weights + scales + zeros + permutation


def test_batch_dimensions_and_strided_input(rng):
    tensors = ref.random_gptq(K, N, 3, rng)
    w = pntk.Q4Matrix.from_gptq(**tensors)
    x = torch.from_numpy(rng.standard_normal((2, 3, 2 * K)).astype(np.float32))[..., ::2]  # last stride 2
    y = w(x)
    assert y.shape == (2, 3, N)
    expected = ref.matmul(x.reshape(-1, K), ref.dequantize(**tensors)).reshape(2, 3, N)
    assert ref.relative_error(y, expected) <= ref.TOLERANCE[torch.float32]


@pytest.mark.parametrize("rows", [1, 64])
def test_fp16_partial_sums_that_would_overflow(device, rows, rng):
    # K = 13824 (Llama-2-13B down_proj). Every row of a column has q - z = d_n (1..7) and the
    # activations are +8 in the first half and -8 in the second plus unit noise: partial sums
    # reach 8 * 7 * s * 6912 ~ 4e5 (> 65504) while the outputs stay near 7 * s * sqrt(K).
    k, n, groups = 13824, 64, 108
    d = rng.integers(1, 8, size=n)
    z = rng.integers(0, 16 - 7, size=(groups, n))
    q = np.repeat(z, k // groups, axis=0) + d  # [K, N], values in 1..15
    qweight = torch.from_numpy((q.reshape(k // 8, 8, n) << (4 * np.arange(8))[None, :, None]).sum(axis=1).astype(np.uint64).astype(np.uint32).view(np.int32))
    qzeros = torch.from_numpy((z.reshape(groups, n // 8, 8) << (4 * np.arange(8))).sum(axis=2).astype(np.uint64).astype(np.uint32).view(np.int32))
    scales = torch.from_numpy(rng.uniform(0.5, 1.0, size=(groups, n)).astype(np.float16))
    w = pntk.Q4Matrix.from_gptq(qweight.to(device), qzeros.to(device), scales.to(device), checkpoint_format="gptq_v2")
    sign = np.where(np.arange(k) < k // 2, 8.0, -8.0)
    x = torch.from_numpy((sign + rng.standard_normal((rows, k))).astype(np.float16))
    w64 = ref.dequantize(qweight, qzeros, scales, checkpoint_format="gptq_v2")
    assert np.abs(x.double().numpy()[:, : k // 2] @ w64[: k // 2]).max() > 65504  # fp16 partial sums overflow
    expected = ref.matmul(x, w64)
    assert np.abs(expected).max() < 65504
    y = w(x.to(device)).cpu()
    assert torch.isfinite(y).all()
    assert ref.relative_error(y, expected) <= ref.TOLERANCE[torch.float16]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gemv_error_is_the_output_rounding(device, dtype, rng):
    # fp16 / bf16 x are exact in fp32, so the GEMV's error is its one rounding of y to dtype plus
    # fp32 sums: a kernel that rounded x (e.g. fp16 x to bf16, ~1e-3) fails this, not TOLERANCE.
    w, w64 = act_order_matrix(device, ref.random_gptq(K, N, 3, rng, act_order=True))
    for m in (1, 2, 8):
        x = torch.from_numpy(rng.standard_normal((m, K)).astype(np.float32)).to(dtype)
        error, rounding = error_and_output_rounding(w, w64, x, device)
        assert error <= 1.1 * rounding + 1e-5, f"M={m}: relative error {error:.3g}, output rounding {rounding:.3g}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gemv_error_with_massive_activations(device, dtype, rng):
    # A few channels at 300-3000x, side by side (one chunk of a group in the original row order),
    # as LLM hidden states carry: a kernel that scaled x per chunk by its largest |x| would keep
    # ~4 bits of the chunk's other elements (the int16 GEMVs add such elements apart, exactly).
    w, w64 = act_order_matrix(device, ref.random_gptq(K, N, 3, rng, act_order=False))
    for m in (1, 2, 8):
        x = rng.standard_normal((m, K))
        first = 32 * int(rng.integers(K // 32))
        x[:, first + 3 : first + 6] *= rng.uniform(300, 3000, size=3) * rng.choice([-1, 1], size=3)
        x = torch.from_numpy(x.astype(np.float32)).to(dtype)
        error, rounding = error_and_output_rounding(w, w64, x, device)
        assert error <= 1.1 * rounding + 1e-5, f"M={m}: relative error {error:.3g}, output rounding {rounding:.3g}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gemv_error_with_outliers_in_x(device, dtype, rng):
    # LLM activations carry a few channels 100x larger than the rest. A kernel that scales x per
    # block loses the small values beside an outlier (int8 x per 32 rows: about 1e-2 of |y|
    # here; 16-bit integers per 32 rows: about 2^-14); the GEMVs keep x exact, so the error
    # stays the output rounding.
    w, w64 = act_order_matrix(device, ref.random_gptq(K, N, 3, rng, act_order=True))
    for m in (1, 2, 8):
        for outliers in (6, 1):
            x = rng.standard_normal((m, K))
            where = rng.choice(K, size=outliers, replace=False)
            x[:, where] *= rng.uniform(50, 150, size=outliers) * rng.choice([-1, 1], size=outliers)
            x = torch.from_numpy(x.astype(np.float32)).to(dtype)
            error, rounding = error_and_output_rounding(w, w64, x, device)
            assert error <= 1.1 * rounding + 1e-5, (
                f"M={m}, {outliers} outliers: relative error {error:.3g}, output rounding {rounding:.3g}")


@pytest.mark.parametrize("scale", [2.0**-120, 2.0**100])
def test_bf16_activations_at_the_ends_of_the_exponent_range(device, scale, rng):
    # bf16 has fp32's exponent range: integer or scaled kernels must not overflow or flush.
    w, w64 = act_order_matrix(device, ref.random_gptq(K, N, 3, rng, act_order=True))
    for m in (1, 3, 17):
        x = (torch.from_numpy(rng.standard_normal((m, K)).astype(np.float32)) * scale).to(torch.bfloat16)
        y = w(x.to(device)).cpu()
        assert torch.isfinite(y).all()
        assert ref.relative_error(y, ref.matmul(x, w64)) <= ref.TOLERANCE[torch.bfloat16], f"M={m}"


@pytest.mark.parametrize("kernel", [f["name"] for f in FAMILIES])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_cpu_kernels_take_activations_near_the_top_of_the_float_range(kernel, dtype, rng):
    # |x| ~ 2^120 with scales ~2^-7: y ~ 2^123 is finite, but sums of x (1 + q/16) or of x q 2^4j
    # over a group are not, unless the row is scaled down first (q4::row_scale).
    skip_unless_this_cpu_runs(kernel)
    with cpu_kernel(kernel):
        w, w64 = act_order_matrix("cpu", ref.random_gptq(K, N, 3, rng, act_order=True))
        for m in (1, 3, 17):
            x = (torch.from_numpy(rng.standard_normal((m, K)).astype(np.float32)) * 2.0**120).to(dtype)
            expected = ref.matmul(x, w64)
            assert np.abs(expected).max() < 2.0**127  # representable: an inf or NaN in y is the kernel's
            y = w(x)
            assert torch.isfinite(y).all(), f"M={m}"
            assert ref.relative_error(y, expected) <= ref.TOLERANCE[dtype], f"M={m}"


def test_bf16_denormal_activations_are_not_flushed(device, rng):
    # |x| < 2^-126 are bf16 denormals (vdpbf16ps reads them as 0). With scales near 2^15 the
    # outputs (~2^-110) are normal bf16 numbers, so a kernel that flushed x would return 0.
    tensors = ref.random_gptq(K, N, 3, rng, act_order=True)
    tensors["scales"] = torch.from_numpy(rng.uniform(2.0**14, 2.0**15, size=tensors["scales"].shape).astype(np.float16))
    w, w64 = act_order_matrix(device, tensors)
    for m in (1, 3, 17):
        x = (torch.from_numpy(rng.standard_normal((m, K)).astype(np.float32)) * 2.0**-130).to(torch.bfloat16)
        assert (x.float().abs() < 2.0**-126).all() and (x != 0).any()
        y = w(x.to(device)).cpu()
        assert ref.relative_error(y, ref.matmul(x, w64)) <= ref.TOLERANCE[torch.bfloat16], f"M={m}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_activations_give_non_finite_rows(device, bad, dtype, rng):
    # A NaN or Inf in row 1 of x must show in row 1 of y (no integer path may swallow it), and
    # leave the other rows exact.
    w, w64 = act_order_matrix(device, ref.random_gptq(K, N, 3, rng, act_order=True))
    for m in (3, 17):
        x = torch.from_numpy(rng.standard_normal((m, K)).astype(np.float32)).to(dtype)
        x[1, rng.integers(K)] = bad
        y = w(x.to(device)).cpu()
        assert not torch.isfinite(y[1]).any(), f"M={m}: row 1 has finite values"
        others = [i for i in range(m) if i != 1]
        assert ref.relative_error(y[others], ref.matmul(x[others], w64)) <= ref.TOLERANCE[dtype], f"M={m}"


def test_results_do_not_depend_on_thread_count(rng):
    tensors = ref.random_gptq(K, 8 * 64 + 8, 6, rng, act_order=True)
    w = pntk.Q4Matrix.from_gptq(**tensors)
    threads = q4.get_num_threads()
    try:
        for m in (1, 17):
            x = torch.from_numpy(rng.standard_normal((m, K)).astype(np.float32))
            q4.set_num_threads(1)
            single = w(x)
            q4.set_num_threads(3)
            assert q4.get_num_threads() == 3
            assert torch.equal(w(x), single)
    finally:
        q4.set_num_threads(threads)


def test_build_info_and_kernels():
    info = pntk.build_info()
    assert isinstance(info["version"], str) and isinstance(info["cuda"], bool)
    assert all(isinstance(a, int) for a in info["cuda_archs"])
    assert info["cpu_kernel"] in KERNELS
    assert KERNELS[-1] == "scalar"
    assert [f["name"] for f in FAMILIES if f["available"]] == KERNELS
    for f in FAMILIES:  # one this CPU cannot run names the required features it lacks
        assert f["available"] == (f["reason"] == "")
        if not f["available"]:
            assert f["reason"].startswith(f"{f['name']}: this CPU lacks ")
            assert set(f["reason"].split(" lacks ")[1].split(", ")) <= set(f["requires"])
    built = {"x86_64": ["avx512vnni", "avx512bf16", "avx512", "avx2", "scalar"], "aarch64": ["neon", "scalar"]}
    assert [f["name"] for f in FAMILIES] == built.get(platform.machine(), ["scalar"])
    assert pntk.get_num_threads() >= 1
    assert info["cpu_threads"] == "pntk" or info["cpu_threads"].startswith("openmp (")


TORCH_RUNS_ON_OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()


def run_python(code: str, **environment) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PNTK_CPU_THREADS", "OMP_WAIT_POLICY")}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_thread_runtime_follows_the_environment():
    show = "import pntk; print(pntk.build_info()['cpu_threads'])"
    default = run_python(show)
    assert default.returncode == 0, default.stderr
    if TORCH_RUNS_ON_OPENMP:  # torch's OpenMP threads run pntk's parallel loops too
        assert default.stdout.startswith("openmp (") and "omp" in default.stdout.split("/")[-1]
    assert run_python(show, PNTK_CPU_THREADS="pntk").stdout.strip() == "pntk"
    assert run_python(show, OMP_WAIT_POLICY="PASSIVE").stdout.strip() == "pntk"  # idle OpenMP threads sleep
    bad = run_python(show, PNTK_CPU_THREADS="threads")
    assert bad.returncode != 0
    assert "PNTK_CPU_THREADS: must be auto, openmp or pntk, got 'threads'" in bad.stderr


def test_cpu_kernel_follows_the_environment():
    show = "import pntk; print(pntk.build_info()['cpu_kernel'])"
    assert run_python(show).stdout.strip() == KERNELS[0]
    for name in KERNELS:
        assert run_python(show, PNTK_CPU_KERNEL=name).stdout.strip() == name
    bad = run_python(show, PNTK_CPU_KERNEL="sse9")
    assert bad.returncode != 0
    assert f"PNTK_CPU_KERNEL: 'sse9' is not available on this CPU (available: {', '.join(KERNELS)})" in bad.stderr


def test_results_do_not_depend_on_the_thread_runtime(rng):
    tensors = ref.random_gptq(K, 8 * 64 + 8, 6, rng, act_order=True)
    w = pntk.Q4Matrix.from_gptq(**tensors)
    runtimes = ["pntk"] + (["openmp"] if TORCH_RUNS_ON_OPENMP else [])
    threads = q4.get_num_threads()
    try:
        q4.set_num_threads(2)
        for m in (1, 17):
            x = torch.from_numpy(rng.standard_normal((m, K)).astype(np.float32))
            results = []
            for runtime in runtimes:
                pntk.set_thread_runtime(runtime)
                assert pntk.build_info()["cpu_threads"].split(" ")[0] == runtime
                results.append(w(x))
            assert all(torch.equal(r, results[0]) for r in results)
        with pytest.raises(ValueError, match="runtime: must be auto, openmp or pntk, got 'gomp'"):
            pntk.set_thread_runtime("gomp")
    finally:
        q4.set_num_threads(threads)
        pntk.set_thread_runtime("auto")


# ---- bad input -------------------------------------------------------------------------


def valid(rng, groups=4, act_order=True):
    return ref.random_gptq(64, 16, groups, rng, act_order=act_order)


def replace(tensors, **changes):
    out = dict(tensors)
    out.update(changes)
    return out


BAD_INPUTS = [
    ("qweight float", lambda t: replace(t, qweight=t["qweight"].float()), "qweight: must be int32, got float32"),
    ("qweight 1-D", lambda t: replace(t, qweight=t["qweight"].flatten()), "qweight: must have 2 dimensions"),
    ("qweight empty", lambda t: replace(t, qweight=t["qweight"][:0]), "qweight: must not be empty"),
    ("qweight N % 8", lambda t: replace(t, qweight=t["qweight"][:, :12].contiguous()), "qweight: out_features N = 12 must be a multiple of 8"),
    ("qweight strided", lambda t: replace(t, qweight=t["qweight"].t().contiguous().t()), "qweight: must be contiguous"),
    ("qweight numpy", lambda t: replace(t, qweight=t["qweight"].numpy()), "qweight: must be a torch.Tensor"),
    ("qzeros int64", lambda t: replace(t, qzeros=t["qzeros"].long()), "qzeros: must be int32, got int64"),
    ("qzeros columns", lambda t: replace(t, qzeros=torch.cat([t["qzeros"]] * 2, 1)), r"qzeros: shape must be \[groups, N/8\] = \[4, 2\], got \[4, 4\]"),
    ("scales float32", lambda t: replace(t, scales=t["scales"].float()), "scales: must be float16, got float32"),
    ("scales rows", lambda t: replace(t, scales=t["scales"][:3].contiguous()), r"scales: shape must be \[groups, N\]"),
    ("scales columns", lambda t: replace(t, scales=t["scales"][:, :8].contiguous()), r"scales: shape must be \[groups, N\]"),
    ("g_idx length", lambda t: replace(t, g_idx=t["g_idx"][:-8].contiguous()), r"g_idx: shape must be \[K\]"),
    ("g_idx int64", lambda t: replace(t, g_idx=t["g_idx"].long()), "g_idx: must be int32, got int64"),
    ("g_idx too large", lambda t: replace(t, g_idx=torch.where(torch.arange(64) == 5, 4, t["g_idx"]).int()), r"g_idx: value 4 at row 5 is outside \[0, groups = 4\)"),
    ("g_idx negative", lambda t: replace(t, g_idx=torch.where(torch.arange(64) == 9, -1, t["g_idx"]).int()), r"g_idx: value -1 at row 9 is outside"),
    ("groups do not divide K", lambda t: replace(t, qzeros=t["qzeros"][:3].contiguous(), scales=t["scales"][:3].contiguous(), g_idx=None), "qzeros: 3 groups do not divide in_features K = 64"),
    ("bias shape", lambda t: replace(t, bias=torch.zeros(8, dtype=torch.float16)), r"bias: shape must be \[N\] = \[16\], got \[8\]"),
    ("bias int", lambda t: replace(t, bias=torch.zeros(16, dtype=torch.int32)), "bias: must be float16, bfloat16 or float32, got int32"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_gptq_tensors_name_the_tensor(case, rng):
    _, mutate, message = case
    with pytest.raises(ValueError, match=message):
        pntk.Q4Matrix.from_gptq(**mutate(valid(rng)))


def test_bad_checkpoint_format(rng):
    with pytest.raises(ValueError, match="checkpoint_format: must be 'gptq' or 'gptq_v2', got 'gptq_v3'"):
        pntk.Q4Matrix.from_gptq(**valid(rng), checkpoint_format="gptq_v3")


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(2, 63), r"x: last dimension must be in_features = 64, got shape \[2, 63\]"),
        (torch.zeros(2, 64, dtype=torch.float64), "x: dtype torch.float64 is not supported"),
        (torch.zeros(2, 64, dtype=torch.int32), "x: must be float16, bfloat16 or float32, got int32"),
        (torch.tensor(1.0), "x: last dimension must be in_features = 64"),
    ],
)
def test_bad_activations(x, message, rng):
    w = pntk.Q4Matrix.from_gptq(**valid(rng))
    with pytest.raises(ValueError, match=message):
        w(x)


def test_bad_settings():
    with pytest.raises(ValueError, match="threads: must be at least 1, got 0"):
        q4.set_num_threads(0)
    with pytest.raises(ValueError, match="kernel: 'avx9000' is not available on this CPU"):
        q4.set_cpu_kernel("avx9000")


def test_dequantize_bad_dtype(rng):
    w = pntk.Q4Matrix.from_gptq(**valid(rng))
    with pytest.raises(ValueError, match="dtype: must be float16, bfloat16 or float32, got int32"):
        w.dequantize(torch.int32)
