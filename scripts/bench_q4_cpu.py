#!/usr/bin/env python3
"""CPU GPTQ 4-bit matmul benchmark (a script, not a test): every ratio is measured in this run.

For M = 1 and 8 at the Llama-2 shapes, group 32 and 128 (act-order g_idx, fp16 or bf16 activations),
with enough weight copies rotated to exceed the L3 (--min-mb, default 320 MB > a 300 MB L3):
time per call, effective GB/s (bytes of qweight + scales + zeros + x + y per call), percent
of the read bandwidth measured here (a multithreaded streaming sum over a 1 GiB buffer, timed
just before each batch of q4 calls: the ratio is taken round by round, as the bandwidth a shared
machine gives drifts within seconds), and the speed-up over torch's dense bf16 and fp32 matmul
of the same shape (copies rotated too).
Then the GEMM path (M = 64, 256) against torch's dense fp32 matmul of the dequantized weight,
a cache-hot case (K=14336, N=4096, M=1, group 32, act-order, one weight copy), and Llama-2-7B
decode layers with torch's operators between the q4 matmuls, on each thread runtime
(pntk.set_thread_runtime: pntk's own threads, or torch's OpenMP team).

    python scripts/bench_q4_cpu.py [--threads N] [--kernel avx512bf16|avx512|avx2|scalar] [--min-mb 320]
                                   [--dtype float16|bfloat16]
"""
import argparse
import math
import mmap
import os
import time

import torch

import pntk
from pntk import q4

LLAMA2_SHAPES = [  # (K, N)
    ("7B qkv", 4096, 12288),
    ("7B o", 4096, 4096),
    ("7B gate+up", 4096, 22016),
    ("7B down", 11008, 4096),
    ("13B qkv", 5120, 15360),
    ("13B o", 5120, 5120),
    ("13B gate+up", 5120, 27648),
    ("13B down", 13824, 5120),
]


def timed(fn, calls_per_batch, batches=5):
    """Best seconds per call over `batches` batches, after a warm-up batch (the best batch is
    the one least disturbed by other work on a shared machine)."""
    fn_batch = lambda: [fn(i) for i in range(calls_per_batch)]  # noqa: E731
    fn_batch()
    samples = []
    for _ in range(batches):
        start = time.perf_counter()
        fn_batch()
        samples.append((time.perf_counter() - start) / calls_per_batch)
    return min(samples)


def transparent_huge_pages():
    """The kernel's THP mode ("always", "madvise" or "never"), or "unknown"."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "unknown"


class ReadBandwidth:
    """GB/s of a multithreaded streaming sum (torch's parallel reduction) over 1 GiB. The buffer
    asks for transparent huge pages, as pntk's packed weights do (core/huge_pages.h), so both
    sides of the ratio read memory the same way (a sum on 4 KiB pages reads 5-15% slower here)."""

    def __init__(self):
        nbytes = 2**30
        self.mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            self.mapping.madvise(mmap.MADV_HUGEPAGE)
        self.buffer = torch.frombuffer(self.mapping, dtype=torch.float32, count=nbytes // 4)
        self.buffer.fill_(1.0)

    def measure(self):
        seconds = timed(lambda i: self.buffer.sum(), 1, batches=3)
        return self.buffer.numel() * 4 / seconds / 1e9


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def timed_beside_bandwidth(fn, calls_per_batch, nbytes, bandwidth, rounds=5):
    """`rounds` times: the read bandwidth, then the best of 2 batches of fn. Returns the median
    seconds per call, the median bandwidth and the median and range of the per-round ratio of
    fn's GB/s (nbytes per call) to the bandwidth measured just before it."""
    seconds, bandwidths, ratios = [], [], []
    for _ in range(rounds):
        bandwidths.append(bandwidth.measure())
        seconds.append(timed(fn, calls_per_batch, batches=2))
        ratios.append(nbytes / seconds[-1] / 1e9 / bandwidths[-1])
    return median(seconds), median(bandwidths), median(ratios), (min(ratios), max(ratios))


def random_q4(k, n, group_size, generator):
    """A Q4Matrix from random GPTQ tensors (act-order g_idx); values do not matter to speed."""
    groups = k // group_size
    qweight = torch.randint(-(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, generator=generator)
    qzeros = torch.randint(-(2**31), 2**31 - 1, (groups, n // 8), dtype=torch.int32, generator=generator)
    scales = (torch.rand(groups, n, generator=generator) * 0.01).to(torch.float16)
    g_idx = (torch.arange(k) // group_size)[torch.randperm(k, generator=generator)].to(torch.int32)
    return pntk.Q4Matrix.from_gptq(qweight, qzeros, scales, g_idx)


def q4_bytes(k, n, group_size, m):
    groups = k // group_size
    return k * n // 2 + groups * n * 2 + groups * n // 2 + m * k * 2 + m * n * 2


def copies_for(bytes_per_copy, min_bytes):
    return max(2, math.ceil(min_bytes / bytes_per_copy))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    parser.add_argument("--kernel", default=None, help="CPU kernel family (default: the best this CPU runs)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"], help="activations' dtype")
    parser.add_argument("--min-mb", type=float, default=320.0, help="rotated working set per case, MB")
    args = parser.parse_args()
    if args.threads:
        q4.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    if args.kernel:
        q4.set_cpu_kernel(args.kernel)
    min_bytes = args.min_mb * 1e6
    x_dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(0)

    bandwidth = ReadBandwidth()
    print(f"pntk {pntk.__version__}, cpu_kernel {pntk._core.q4_cpu_kernel()}, threads {q4.get_num_threads()} "
          f"(torch {torch.get_num_threads()}), cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"working set per case >= {args.min_mb:.0f} MB (weight copies rotated); activations {args.dtype}; act-order g_idx; "
          f"transparent huge pages: {transparent_huge_pages()}")
    print()
    rows = []
    header = (f"{'shape':<12} {'K':>6} {'N':>6} {'g':>4} {'M':>2} {'copies':>6} {'q4 ms':>8} {'GB/s':>6} {'bw GB/s':>7} "
              f"{'%bw':>5} {'(range)':>9} {'bf16 ms':>8} {'x bf16':>7} {'fp32 ms':>8} {'x fp32':>7}")
    for label, k, n in LLAMA2_SHAPES:
        dense = {}
        for dtype in (torch.bfloat16, torch.float32):
            weight_bytes = k * n * torch.finfo(dtype).bits // 8
            weights = [torch.randn(k, n, generator=generator).to(dtype) for _ in range(copies_for(weight_bytes, min_bytes))]
            for m in (1, 8):
                x = torch.randn(m, k, generator=generator).to(dtype)
                dense[dtype, m] = timed(lambda i: x @ weights[i % len(weights)], len(weights))
            del weights
        for group_size in (32, 128):
            copies = copies_for(q4_bytes(k, n, group_size, 0), min_bytes)
            mats = [random_q4(k, n, group_size, generator) for _ in range(copies)]
            for m in (1, 8):
                x = torch.randn(m, k, generator=generator).to(x_dtype)
                measured = timed_beside_bandwidth(lambda i: mats[i % copies](x), copies,
                                                  q4_bytes(k, n, group_size, m), bandwidth)
                rows.append((label, k, n, group_size, m, copies, *measured,
                             dense[torch.bfloat16, m], dense[torch.float32, m]))
            del mats
    print(f"read bandwidth: a streaming sum over 1 GiB on {torch.get_num_threads()} threads; per row the median of "
          f"5 rounds, each a bandwidth sample just before the best of 2 batches of q4 calls; %bw is the median of "
          f"the rounds' ratios (range: lowest-highest)")
    print()
    print(header)
    print("-" * len(header))
    for label, k, n, group_size, m, copies, seconds, bw, ratio, (low, high), bf16, fp32 in rows:
        gbs = q4_bytes(k, n, group_size, m) / seconds / 1e9
        print(f"{label:<12} {k:>6} {n:>6} {group_size:>4} {m:>2} {copies:>6} {seconds * 1e3:>8.3f} {gbs:>6.1f} {bw:>7.1f} "
              f"{100 * ratio:>4.0f}% {f'{100 * low:.0f}-{100 * high:.0f}%':>9} {bf16 * 1e3:>8.3f} {bf16 / seconds:>6.1f}x "
              f"{fp32 * 1e3:>8.3f} {fp32 / seconds:>6.1f}x")

    print()
    print("GEMM path (M > 16): q4 vs torch fp32 matmul of the dequantized weight (one copy each)")
    for label, k, n in (LLAMA2_SHAPES[1], LLAMA2_SHAPES[7]):
        w = random_q4(k, n, 32, generator)
        dense = w.dequantize(torch.float32)
        for m in (64, 256):
            x = torch.randn(m, k, generator=generator)
            q4_seconds = timed(lambda i: w(x), 2, batches=3)
            dense_seconds = timed(lambda i: x @ dense, 2, batches=3)
            print(f"  {label:<12} K={k:>5} N={n:>5} M={m:>3}: q4 {q4_seconds * 1e3:8.2f} ms ({2 * m * k * n / q4_seconds / 1e9:6.1f} GFLOP/s), "
                  f"fp32 {dense_seconds * 1e3:8.2f} ms: {dense_seconds / q4_seconds:.2f}x", flush=True)
        del w, dense

    k, n = 14336, 4096
    hot = random_q4(k, n, 32, generator)
    x = torch.randn(1, k, generator=generator).to(x_dtype)
    seconds = timed(lambda i: hot(x), 50)
    size_mb = q4_bytes(k, n, 32, 0) / 1e6
    print()
    print(f"cache-hot: K={k} N={n} M=1 group 32 act-order, one copy ({size_mb:.1f} MB): {seconds * 1e3:.3f} ms "
          f"({q4_bytes(k, n, 32, 1) / seconds / 1e9:.1f} GB/s), {q4.get_num_threads()} threads")
    # On a shared machine wall time includes other processes' turns; the CPU time of a
    # one-thread run does not, so it shows the kernel's own speed.
    threads = q4.get_num_threads()
    q4.set_num_threads(1)
    for _ in range(5):
        hot(x)
    start = time.thread_time()
    for _ in range(50):
        hot(x)
    cpu = (time.thread_time() - start) / 50
    q4.set_num_threads(threads)
    print(f"  same case on one thread: {cpu * 1e3:.3f} ms of CPU time per call ({k * n / cpu / 1e9:.1f} multiply-adds/ns)")
    decode_step(generator, x_dtype)


def decode_step(generator, x_dtype, layers=4, context=4096, heads=32):
    """Llama-2-7B decode layers as a runner runs them: torch's RMSNorm, attention over a cached
    context (fp32) and SiLU between the q4 matmuls (g128, act-order), 4 layers rotated (over the
    L3). Torch's parallel operators leave its OpenMP threads spinning, so where the q4 kernels'
    threads come from matters: each thread runtime is timed, rounds alternating."""
    h, inter = 4096, 11008
    stack = [dict(qkv=random_q4(h, 3 * h, 128, generator), o=random_q4(h, h, 128, generator),
                  gate_up=random_q4(h, 2 * inter, 128, generator), down=random_q4(inter, h, 128, generator),
                  keys=torch.randn(heads, context, h // heads, generator=generator),
                  values=torch.randn(heads, context, h // heads, generator=generator)) for _ in range(layers)]
    q4_seconds = [0.0]

    def q4_call(w, x):
        start = time.perf_counter()
        y = w(x)
        q4_seconds[0] += time.perf_counter() - start
        return y

    def rms_norm(x):
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(x_dtype)

    def step(x):
        for layer in stack:
            q, _, _ = q4_call(layer["qkv"], rms_norm(x)).split(h, dim=-1)
            scores = torch.softmax(q.float().view(heads, 1, -1) @ layer["keys"].transpose(1, 2) / 11.3, dim=-1)
            x = x + q4_call(layer["o"], (scores @ layer["values"]).reshape(1, h).to(x_dtype))
            gate_up = q4_call(layer["gate_up"], rms_norm(x))
            x = x + q4_call(layer["down"], torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:])
        return x

    runtimes = ["pntk"] + (["openmp"] if pntk.build_info()["cpu_threads"].startswith("openmp") else [])
    x = (torch.randn(1, h, generator=generator) * 0.1).to(x_dtype)
    results = {runtime: ([], []) for runtime in runtimes}  # seconds per layer: whole step, q4 calls
    for round_ in range(12):
        for runtime in runtimes:
            pntk.set_thread_runtime(runtime)
            q4_seconds[0] = 0.0
            start = time.perf_counter()
            step(x)
            if round_ >= 2:  # warm-up rounds
                results[runtime][0].append((time.perf_counter() - start) / layers)
                results[runtime][1].append(q4_seconds[0] / layers)
    pntk.set_thread_runtime("auto")
    print()
    print(f"decode step: {layers} Llama-2-7B layers rotated (g128 act-order q4; torch RMSNorm, fp32 attention over "
          f"{context} cached positions and SiLU between), median of 10 rounds per thread runtime")
    q4_median = {runtime: median(results[runtime][1]) for runtime in runtimes}
    weights = sum(q4_bytes(k, n, 128, 1) for k, n in ((h, 3 * h), (h, h), (h, 2 * inter), (inter, h)))
    for runtime in runtimes:
        layer_seconds, q4_layer = median(results[runtime][0]), q4_median[runtime]
        print(f"  {runtime:<6}: {layer_seconds * 1e3:6.2f} ms per layer, of which q4 {q4_layer * 1e3:6.2f} ms "
              f"({weights / q4_layer / 1e9:5.1f} GB/s)")
    if len(runtimes) == 2:
        print(f"  q4 time on pntk's own threads / on torch's OpenMP team: {q4_median['pntk'] / q4_median['openmp']:.2f}x")


if __name__ == "__main__":
    main()
