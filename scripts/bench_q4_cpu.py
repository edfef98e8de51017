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
Last, the peer to beat: ggml (llama.cpp's CPU backend, built from ../shared/upstream's pinned
tarball by scripts/ggml_peer.py and timed in a process of its own by scripts/ggml_q4_timing.c):
for M = 1 and 8 at the Llama-2 shapes, ggml's q4_0 and q4_K matmul with the weights in each of the
CPU device's buffer types (plain, CPU_REPACK's interleaved q4_0_8x8 / q4_K_8x8, AMX where built)
against pntk g128 and g32 act-order, rounds of each interleaved on the same cores, median of
rounds (each round: the median per-call time over one pass through the rotated weight copies).

    python scripts/bench_q4_cpu.py [--threads N] [--kernel avx512vnni|avx512bf16|avx512|avx2|neon|scalar] [--min-mb 320]
                                   [--dtype float16|bfloat16] [--ggml native|avx2|native,avx2|off]
                                   [--ggml-cc clang-14] [--ggml-threads 1,2] [--ggml-only] [--quick]

--quick is a smoke run: two shapes, small working sets (cache-resident on a large L3), few rounds.
"""
import argparse
import math
import mmap
import os
import sys
import time

import torch

import pntk
from pntk import q4

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggml_peer  # noqa: E402

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
    parser.add_argument("--min-mb", type=float, default=None,
                        help="rotated working set per case, MB (default 320; the ggml comparison uses at least "
                             "1.25x the L3; --quick: 48)")
    parser.add_argument("--ggml", default=None,
                        help="ggml build(s) to compare against: native, avx2, native,avx2 or off (default: native "
                             "when ../shared/upstream has the ggml tarball, else off)")
    parser.add_argument("--ggml-cc", default=None,
                        help="C compiler for the ggml build, e.g. clang-14 (default: CMake's; GCC 12 breaks ggml's "
                             "AMX tile path, see scripts/ggml_peer.py)")
    parser.add_argument("--ggml-threads", default=None,
                        help="thread counts of the ggml comparison, e.g. 1,2 (default: --threads, else 1 and all cores)")
    parser.add_argument("--ggml-only", action="store_true", help="run only the ggml comparison")
    parser.add_argument("--ggml-busy", type=float, default=20.0,
                        help="ggml comparison: measure a row again while other processes used more than this "
                             "%% of the cores (default 20)")
    parser.add_argument("--ggml-attempts", type=int, default=None,
                        help="ggml comparison: tries per row at most, the quietest kept (default 3; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: two shapes, small working sets, few rounds")
    args = parser.parse_args()
    if args.min_mb is None:
        args.min_mb = 48.0 if args.quick else 320.0
    if args.ggml_attempts is None:
        args.ggml_attempts = 1 if args.quick else 3
    if args.threads:
        q4.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    if args.kernel:
        q4.set_cpu_kernel(args.kernel)
    min_bytes = args.min_mb * 1e6
    x_dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(0)
    shapes = [LLAMA2_SHAPES[1], LLAMA2_SHAPES[3]] if args.quick else LLAMA2_SHAPES
    if not args.ggml_only:
        pntk_sections(args, shapes, min_bytes, x_dtype, generator)
    ggml_sections(args, shapes, x_dtype, generator)


def pntk_sections(args, shapes, min_bytes, x_dtype, generator):
    bandwidth = ReadBandwidth()
    print(f"pntk {pntk.__version__}, cpu_kernel {pntk._core.q4_cpu_kernel()}, threads {q4.get_num_threads()} "
          f"(torch {torch.get_num_threads()}), cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"working set per case >= {args.min_mb:.0f} MB (weight copies rotated); activations {args.dtype}; act-order g_idx; "
          f"transparent huge pages: {transparent_huge_pages()}")
    print()
    rows = []
    header = (f"{'shape':<12} {'K':>6} {'N':>6} {'g':>4} {'M':>2} {'copies':>6} {'q4 ms':>8} {'GB/s':>6} {'bw GB/s':>7} "
              f"{'%bw':>5} {'(range)':>9} {'bf16 ms':>8} {'x bf16':>7} {'fp32 ms':>8} {'x fp32':>7}")
    for label, k, n in shapes:
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
    for label, k, n in (LLAMA2_SHAPES[1],) if args.quick else (LLAMA2_SHAPES[1], LLAMA2_SHAPES[7]):
        w = random_q4(k, n, 32, generator)
        dense = w.dequantize(torch.float32)
        for m in (64,) if args.quick else (64, 256):
            x = torch.randn(m, k, generator=generator)
            q4_seconds = timed(lambda i: w(x), 2, batches=3)
            dense_seconds = timed(lambda i: x @ dense, 2, batches=3)
            print(f"  {label:<12} K={k:>5} N={n:>5} M={m:>3}: q4 {q4_seconds * 1e3:8.2f} ms ({2 * m * k * n / q4_seconds / 1e9:6.1f} GFLOP/s), "
                  f"fp32 {dense_seconds * 1e3:8.2f} ms: {dense_seconds / q4_seconds:.2f}x", flush=True)
        del w, dense

    k, n = 14336, 4096
    hot = random_q4(k, n, 32, generator)
    x = torch.randn(1, k, generator=generator).to(x_dtype)
    hot_calls = 10 if args.quick else 50
    seconds = timed(lambda i: hot(x), hot_calls)
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
    for _ in range(hot_calls):
        hot(x)
    cpu = (time.thread_time() - start) / hot_calls
    q4.set_num_threads(threads)
    print(f"  same case on one thread: {cpu * 1e3:.3f} ms of CPU time per call ({k * n / cpu / 1e9:.1f} multiply-adds/ns)")
    if args.quick:
        decode_step(generator, x_dtype, layers=2, context=512, rounds=4)
    else:
        decode_step(generator, x_dtype)


def decode_step(generator, x_dtype, layers=4, context=4096, heads=32, rounds=12):
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
    for round_ in range(rounds):
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
          f"{context} cached positions and SiLU between), median of {rounds - 2} rounds per thread runtime")
    q4_median = {runtime: median(results[runtime][1]) for runtime in runtimes}
    weights = sum(q4_bytes(k, n, 128, 1) for k, n in ((h, 3 * h), (h, h), (h, 2 * inter), (inter, h)))
    for runtime in runtimes:
        layer_seconds, q4_layer = median(results[runtime][0]), q4_median[runtime]
        print(f"  {runtime:<6}: {layer_seconds * 1e3:6.2f} ms per layer, of which q4 {q4_layer * 1e3:6.2f} ms "
              f"({weights / q4_layer / 1e9:5.1f} GB/s)")
    if len(runtimes) == 2:
        print(f"  q4 time on pntk's own threads / on torch's OpenMP team: {q4_median['pntk'] / q4_median['openmp']:.2f}x")


# ---- the peer to beat: ggml (llama.cpp's CPU backend) ----

GGML_CASES = [  # (column, ggml type, buffer type)
    ("q4_0", "q4_0", "CPU"),
    ("q4_0 rp", "q4_0", "CPU_REPACK"),
    ("q4_0 amx", "q4_0", "AMX"),
    ("q4_K", "q4_K", "CPU"),
    ("q4_K rp", "q4_K", "CPU_REPACK"),
    ("q4_K amx", "q4_K", "AMX"),
]
PNTK_CASES = [("pntk g128", 128), ("pntk g32ao", 32)]  # both act-order g_idx (random_q4)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def l3_bytes():
    """The L3's size from sysfs (cpu0's cache index3), or 0."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            text = f.read().strip()
    except OSError:
        return 0
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


class OthersCpu:
    """CPU time used by processes other than this one and the ggml child between start() and
    stop(), as a percentage of all cores (from /proc/stat and /proc/PID/stat; 10 ms ticks), and the
    hypervisor's steal time: the background a row was measured against on a shared machine."""

    def __init__(self, child_pid):
        self.pids = [os.getpid(), child_pid]
        self.hz = os.sysconf("SC_CLK_TCK")

    def _sample(self):
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        steal = fields[7] if len(fields) > 7 else 0
        ours = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
                ours += int(stat[11]) + int(stat[12])
            except (OSError, IndexError, ValueError):
                pass
        return time.perf_counter(), busy, steal, ours

    def start(self):
        self.begin = self._sample()

    def stop(self):
        end = self._sample()
        ticks = (end[0] - self.begin[0]) * self.hz * (os.cpu_count() or 1)
        others = (end[1] - self.begin[1]) - (end[3] - self.begin[3])
        return max(0.0, 100 * others / ticks), 100 * (end[2] - self.begin[2]) / ticks


def ggml_sections(args, shapes, x_dtype, generator):
    default = "native" if ggml_peer.unavailable_reason() is None else "off"
    variants = [v for v in (args.ggml or default).split(",") if v]
    print()
    if variants == ["off"]:
        reason = ggml_peer.unavailable_reason()
        print("ggml comparison skipped: " + (reason if args.ggml is None and reason else "--ggml off"))
        return
    for variant in variants:
        if variant not in ggml_peer.VARIANT_OPTIONS:
            print(f"ggml comparison: unknown variant {variant!r} (native, avx2 or off)")
            continue
        try:
            compare_ggml(args, variant, shapes, x_dtype, generator)
        except ggml_peer.Unavailable as error:
            print(f"ggml comparison ({variant}) skipped: {error}")


def pntk_round_fn(mats, x):
    """One round of pntk calls: an untimed warm-up call, then one pass through the copies, each call
    timed; returns the median seconds per call."""
    state = [0]

    def round_():
        copies = len(mats)
        mats[state[0] % copies](x)
        state[0] += 1
        samples = []
        for _ in range(copies):
            w = mats[state[0] % copies]
            state[0] += 1
            start = time.perf_counter()
            w(x)
            samples.append(time.perf_counter() - start)
        return median(samples)
    return round_


def compare_ggml(args, variant, shapes, x_dtype, generator):
    """ggml's q4_0 / q4_K mul_mat in each of its buffer types against pntk's q4 GEMV, same shapes,
    same working set, same cores, rounds interleaved (the order rotating round by round)."""
    cores = os.cpu_count() or 1
    if args.ggml_threads:
        thread_counts = [int(t) for t in args.ggml_threads.split(",") if t]
    elif args.threads:
        thread_counts = [args.threads]
    else:
        thread_counts = sorted({1, cores})
    l3 = l3_bytes()
    working_mb = args.min_mb if args.quick else max(args.min_mb, 1.25 * l3 / 1e6)
    rounds = 3 if args.quick else 7
    gap = 0.02  # seconds between two cases: spinning OpenMP threads of the other side go idle

    binary = ggml_peer.ensure_built(variant, log=print, compiler=args.ggml_cc)
    compiler = ggml_peer.compiler_of(variant, args.ggml_cc)
    amx_problem = None
    server = ggml_peer.Server(binary, thread_counts[0], working_mb)
    background = OthersCpu(server.proc.pid)
    try:
        info = server.info
        extra = info.get("extra_bufts", "none").split(",")
        if "AMX" in extra:
            amx_problem = ggml_peer.amx_multi_row_problem(binary)
        features = " ".join(f"{key}={info[key]}" for key in ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_int8",
                                                            "llamafile") if key in info)
        runtime = pntk.build_info()["cpu_threads"].split(" ")[0]
        print(f"== ggml (llama.cpp's CPU backend, ggml {info.get('ggml_commit')}) against pntk's q4 GEMV: "
              f"{variant} build of ggml")
        print(f"machine: {cpu_model()}, {cores} cores, L3 {l3 / 2**20:.0f} MiB, transparent huge pages "
              f"{transparent_huge_pages()}")
        print(f"pntk: cpu_kernel {pntk._core.q4_cpu_kernel()}{' (--kernel)' if args.kernel else ''}, threads from "
              f"{runtime}, activations {args.dtype}; g128 and g32 with act-order g_idx")
        print(f"ggml {variant}: {' '.join(ggml_peer.VARIANT_OPTIONS[variant])} (+ OpenMP, LLAMAFILE, Release), "
              f"{compiler}; "
              f"{features}; extra buffer types: {','.join(extra)}; weight buffers on huge pages: "
              f"{'yes' if info.get('hugepages') == '1' else 'no'}; x f32 (ggml quantizes it to q8_0 / q8_K)")
        print(f"columns: us per call, median of {rounds} interleaved rounds (each the median over one pass "
              f"through the copies, >= {working_mb:.0f} MB rotated per case); rp = CPU_REPACK buffer "
              f"(q4_0 -> q4_0_8x8, q4_K -> q4_K_8x8), amx = AMX buffer (M = 1: AVX512-VNNI GEMV, M > 1: AMX tiles); "
              f"/best = pntk time / the best ggml time (< 1: pntk faster); others = CPU used by other processes "
              f"meanwhile, % of all cores (+ steal, if any; a row is measured again, up to {args.ggml_attempts} "
              f"tries, while it is over {args.ggml_busy:.0f}%, and the quietest try kept); load average now "
              f"{os.getloadavg()[0]:.1f}")
        if amx_problem:
            why = (" GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes of the 64-byte tile config, so "
                   "ggml's stores of the tile shapes are dropped and the first tile instruction faults (llama.cpp "
                   "built so would put its weights there and die in prompt processing; --ggml-cc clang-14 builds "
                   "it right)" if compiler.startswith("GNU 12") else "")
            print(f"note: ggml's AMX buffer type at M > 1 (AMX tiles) cannot run in this build ({amx_problem}); "
                  f"those cells show 'crash'.{why}")
        print()
        header = (f"{'shape':<12} {'K':>5} {'N':>5} {'M':>2} {'thr':>3} "
                  + " ".join(f"{name:>8}" for name, _, _ in GGML_CASES)
                  + " " + " ".join(f"{name:>10}" for name, _ in PNTK_CASES)
                  + f" {'best ggml':>9} {'g128/best':>9} {'g32/best':>8} {'others':>6}")
        print(header)
        print("-" * len(header), flush=True)
        for label, k, n in shapes:
            ready, cells = {}, {}
            for name, type_name, buft in GGML_CASES:
                if buft != "CPU" and buft not in extra:
                    cells[name] = "-"
                    continue
                answer = server.ask("setup", id=name.replace(" ", "_"), k=k, n=n, type=type_name, buft=buft)
                if answer["answer"] == "ready":
                    ready[name] = answer
                else:
                    cells[name] = "n/a"
                    print(f"  ggml {name} at {k}x{n}: {answer.get('reason')}")
            mats = {}
            for name, group_size in PNTK_CASES:
                copies = copies_for(q4_bytes(k, n, group_size, 0), working_mb * 1e6)
                mats[name] = [random_q4(k, n, group_size, generator) for _ in range(copies)]
            for m in (1, 8):
                runnable = []
                for name in ready:
                    if m > 1 and name.endswith("amx") and amx_problem:
                        cells[name, m] = "crash"
                        continue
                    check = server.ask("check", id=name.replace(" ", "_"), m=m)
                    if check.get("ok") != "1":
                        cells[name, m] = "wrong"
                        print(f"  ggml {name} {k}x{n} M={m}: result off the float reference (rel_err "
                              f"{check.get('rel_err')}), not timed")
                        continue
                    runnable.append(name)
                x = torch.randn(m, k, generator=generator).to(x_dtype)
                for threads in thread_counts:
                    q4.set_num_threads(threads)
                    torch.set_num_threads(threads)
                    server.ask("threads", n=threads)
                    cases = [(name, pntk_round_fn(mats[name], x)) for name, _ in PNTK_CASES]
                    for name in runnable:
                        ident, copies = name.replace(" ", "_"), ready[name]["copies"]

                        def ggml_round(ident=ident, copies=copies):
                            return float(server.ask("time", id=ident, m=m, calls=copies, warmup=1)["median_us"]) * 1e-6
                        cases.append((name, ggml_round))
                    attempts = []  # (others %, steal %, us per case): the row again while other processes were busy
                    while len(attempts) < args.ggml_attempts:
                        samples = {name: [] for name, _ in cases}
                        background.start()
                        for round_ in range(rounds):
                            shift = round_ % len(cases)
                            for name, fn in cases[shift:] + cases[:shift]:
                                time.sleep(gap)
                                samples[name].append(fn())
                        others, steal = background.stop()
                        attempts.append((others + steal, others, steal,
                                         {name: median(values) * 1e6 for name, values in samples.items()}))
                        if others + steal < args.ggml_busy:
                            break
                    _, others, steal, us = min(attempts, key=lambda attempt: attempt[0])
                    ggml_us = {name: us[name] for name in runnable}
                    best = min(ggml_us, key=ggml_us.get) if ggml_us else None

                    def cell(name, width):
                        if name in us:
                            return f"{us[name]:>{width}.0f}"
                        return f"{cells.get((name, m), cells.get(name, '-')):>{width}}"
                    line = (f"{label:<12} {k:>5} {n:>5} {m:>2} {threads:>3} "
                            + " ".join(cell(name, 8) for name, _, _ in GGML_CASES)
                            + " " + " ".join(cell(name, 10) for name, _ in PNTK_CASES))
                    if best:
                        line += (f" {best:>9} {us['pntk g128'] / ggml_us[best]:>8.2f}x"
                                 f" {us['pntk g32ao'] / ggml_us[best]:>7.2f}x")
                    else:
                        line += f" {'none':>9} {'-':>9} {'-':>8}"
                    line += f" {others:>5.0f}%" + (f" +{steal:.0f}% steal" if steal >= 1 else "")
                    if len(attempts) > 1:
                        line += f" (quietest of {len(attempts)} tries)"
                    print(line, flush=True)
            for name in ready:
                server.ask("free", id=name.replace(" ", "_"))
            del mats
        q4.set_num_threads(args.threads or cores)
        torch.set_num_threads(args.threads or cores)
    finally:
        server.close()


if __name__ == "__main__":
    main()
