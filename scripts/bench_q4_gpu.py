#!/usr/bin/env python3
"""GPU benchmark of the q4 kernels at the Llama-2-13B shapes, with every ratio measured in
this run: against the device-to-device copy bandwidth (a large copy), against torch's dense
fp16 matmul of the same shape and, when it is installed on that machine (the `exllama_ext`
module of an ExLlama v1 wheel), against ExLlama's own kernel.

    python scripts/bench_q4_gpu.py [--quick] [--json results.json] [--shape KxN ...] [--group G ...] [--rows M ...]

Weights rotate over enough copies to exceed the GPU's L2 cache several times, so every call
reads its weights from DRAM. Layers are act-order (random g_idx), as in the airophin model.
Each small-M case is timed twice: called from Python one after another ("eager": includes the
host's per-call overhead, which exceeds the kernel's time for the smaller layers) and replayed
from a CUDA graph of many calls ("graph": the GPU's time per call, as a runner that captures
its decode step sees it). The goals are judged on the graph times, against dense fp16 timed
the same way; M=2048 is timed eagerly (host overhead is negligible there).
Bytes moved by a q4 call = weights (K*N/2) + scales (2*G*N) + zeros (G*N/2) + x (2*M*K)
+ y (2*M*N). Goals (H100): M=1 at >= 85% of the copy bandwidth, M=16 within 1.3x of M=1's
time, M=2048 at >= 80% of dense fp16 throughput.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

SHAPES = [(5120, 15360), (5120, 5120), (5120, 27648), (13824, 5120)]  # (K, N): qkv, o, gate+up, down
GROUPS = [32, 128]
ROWS = [1, 4, 16, 2048]
ROTATE_BYTES = 4 * 50 * 2**20  # four times the H100's 50 MB L2
GOAL_BANDWIDTH = 0.85
GOAL_M16_OVER_M1 = 1.3
GOAL_DENSE = 0.80


def time_us(fn, calls: int, warmup: int = 3) -> float:
    """Mean microseconds per call over `calls` calls (CUDA events, one synchronize)."""
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000.0 / calls


def graph_us(fn, calls: int, replays: int = 10) -> float:
    """Mean microseconds per call of `calls` calls captured in one CUDA graph, replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on the capture stream: its workspaces exist before capture
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(calls):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000.0 / (replays * calls)


def rotating(layers):
    """A call x -> layers[i](x) that moves to the next copy on every call."""
    state = {"i": 0}

    def call(x):
        state["i"] = (state["i"] + 1) % len(layers)
        return layers[state["i"]](x)

    return call


def copy_bandwidth(device) -> float:
    """Bytes per second of a device-to-device copy (bytes read + bytes written)."""
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    us = time_us(lambda: dst.copy_(src), calls=20)
    return 2 * src.numel() / (us * 1e-6)


def random_layer(k: int, n: int, group: int, device, generator):
    """Random GPTQ tensors (act-order g_idx, like the airophin checkpoint) on the device. Stored
    zeros stay below 15: ExLlama reads a v1 zero of 15 as 16, AutoGPTQ (and pntk) as 0."""
    groups = k // group
    qweight = torch.randint(-2**31, 2**31 - 1, (k // 8, n), dtype=torch.int32, device=device, generator=generator)
    zero_nibbles = torch.randint(0, 15, (groups, n // 8, 8), device=device, generator=generator)
    packed = (zero_nibbles << (4 * torch.arange(8, device=device))).sum(-1)  # int64, nibble i at bits 4i
    qzeros = torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)
    scales = (torch.rand(groups, n, device=device, generator=generator) * 0.01 + 1e-3).to(torch.float16)
    g_idx = (torch.arange(k, device=device) // group).to(torch.int32)
    g_idx = g_idx[torch.randperm(k, device=device, generator=generator)]
    return dict(qweight=qweight, qzeros=qzeros, scales=scales, g_idx=g_idx, checkpoint_format="gptq")


def q4_bytes(k, n, groups, m) -> int:
    return k * n // 2 + 2 * groups * n + groups * n // 2 + 2 * m * k + 2 * m * n


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    """max |y - ref| / max |ref|; inf for NaN."""
    error = (y.float() - reference.float()).abs().max()
    return float(torch.nan_to_num(error / reference.float().abs().max(), nan=float("inf")))


# -- ExLlama v1, for comparison ------------------------------------------------------------------

def load_exllama():
    """(module, "") with ExLlama v1's compiled extension when one is installed, else (None, why not)."""
    try:
        import exllama_ext
    except ImportError as error:
        return None, f"no ExLlama v1 extension installed ({error})"
    return exllama_ext, ""


class ExllamaLayer:
    """ExLlama v1's Q4Matrix over copies of the GPTQ tensors (make_q4 reorders qweight in place
    and keeps pointers to all of them)."""

    def __init__(self, ext, tensors):
        self._ext = ext
        self._tensors = {key: value.clone() for key, value in tensors.items() if isinstance(value, torch.Tensor)}
        t = self._tensors
        self._n = t["qweight"].shape[1]
        self._handle = ext.make_q4(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], t["qweight"].device.index)

    def __call__(self, x):
        out = torch.empty(x.shape[0], self._n, dtype=torch.float16, device=x.device)
        self._ext.q4_matmul(x, self._handle, out)
        return out


def prepare_exllama(ext, device, shapes):
    """ExLlama's global buffers, sized for these shapes (its model.py defaults for tuning)."""
    ext.set_tuning_params(8, 2, 8, False, False, False, False, False, False)
    widest_k = max(k for k, _ in shapes)
    largest = max(k * n for k, n in shapes)
    buffers = [
        torch.zeros(max(ROWS), widest_k, dtype=torch.float16, device=device),  # temp_state: permuted x
        torch.zeros(4, widest_k, dtype=torch.float16, device=device),  # temp_mlp
        torch.zeros(1, 65536, dtype=torch.float32, device=device),  # temp_zeros_float
        torch.zeros(1, largest, dtype=torch.float16, device=device),  # temp_dq: reconstructed weights
    ]
    ext.prepare_buffers(device, *buffers)
    return buffers


# -- the run ------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per measurement")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--shape", nargs="+", help="only these KxN shapes (e.g. 5120x5120)")
    parser.add_argument("--group", nargs="+", type=int, help="only these group sizes")
    parser.add_argument("--rows", nargs="+", type=int, help="only these M")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in text.split("x")) for text in args.shape] if args.shape else SHAPES
    groups_sizes = args.group or GROUPS
    rows_list = args.rows or ROWS
    if not torch.cuda.is_available():
        print("bench_q4_gpu: error: no CUDA GPU visible", file=sys.stderr)
        return 2
    import pntk
    from pntk.q4_cuda import CudaQ4Backend

    if not pntk.build_info()["cuda"]:
        print("bench_q4_gpu: error: pntk was built without CUDA kernels", file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.current_device())
    generator = torch.Generator(device=device).manual_seed(0)
    properties = torch.cuda.get_device_properties(device)
    bandwidth = copy_bandwidth(device)
    print(f"device: {properties.name}, {properties.multi_processor_count} SMs, torch {torch.__version__}, "
          f"pntk {pntk.__version__} {pntk.build_info()}")
    print(f"device-to-device copy: {bandwidth / 1e9:.0f} GB/s (read + write)")
    exllama, why_not = load_exllama()
    exllama_buffers = prepare_exllama(exllama, device, shapes) if exllama else None
    print(f"ExLlama v1 kernel: {'installed, compared below' if exllama else 'not compared: ' + why_not}")
    calls_small, calls_large = (30, 5) if args.quick else (200, 20)

    print("us: per call; eager = called from Python, graph = replayed from a CUDA graph (GPU time); GB/s, %copy and "
          "the goals use graph times for M <= 16 and eager times for M = 2048")
    print(f"{'K x N':>13} {'group':>5} {'M':>5} {'eager us':>9} {'graph us':>9} {'GB/s':>6} {'%copy':>6} "
          f"{'dense us':>9} {'vs dense':>8} {'bf16 us':>8} {'exllama us':>10} {'vs exl':>6}  goal")
    results, checks = [], []
    for k, n in shapes:
        dense_copies = max(2, -(-ROTATE_BYTES // (2 * k * n)))
        dense_weights = [torch.randn(k, n, device=device, generator=generator).to(torch.float16)
                         for _ in range(dense_copies)]
        dense = rotating([lambda x, w=w: x @ w for w in dense_weights])
        inputs = {m: torch.randn(m, k, device=device, generator=generator).to(torch.float16)
                  for m in sorted(set(rows_list) | {1, 16})}
        dense_us = {m: (time_us if m > 16 else graph_us)(lambda: dense(inputs[m]), calls_large if m > 16 else calls_small)
                    for m in rows_list}
        for group in groups_sizes:
            groups = k // group
            copies = max(2, -(-ROTATE_BYTES // q4_bytes(k, n, groups, 0)))
            tensors = [random_layer(k, n, group, device, generator) for _ in range(copies)]
            layers = [CudaQ4Backend(**t) for t in tensors]
            theirs = [ExllamaLayer(exllama, t) for t in tensors] if exllama else None
            del tensors
            # Cross-checks on the first copy: the GEMV (fp16 and bf16) and the matmul path against
            # the dequantized weights, and against ExLlama's kernel (an independent implementation).
            weight = layers[0].dequantize(torch.float32)
            for m in sorted({1, 16} | {m for m in rows_list if m > 16}):
                y = layers[0](inputs[m])
                checks.append(("dequantized", f"{k}x{n} g{group} M={m}", relative_error(y, inputs[m].float() @ weight)))
                if m <= 16:
                    y = layers[0](inputs[m].to(torch.bfloat16))
                    checks.append(("dequantized", f"{k}x{n} g{group} M={m} bf16",
                                   relative_error(y, inputs[m].to(torch.bfloat16).float() @ weight)))
                if theirs:
                    checks.append(("ExLlama", f"{k}x{n} g{group} M={m}", relative_error(y, theirs[0](inputs[m]))))
            del weight
            ours = rotating(layers)
            exl = rotating(theirs) if theirs else None
            time_m1 = None
            for m in rows_list:
                calls = calls_large if m > 16 else calls_small
                eager = time_us(lambda: ours(inputs[m]), calls)
                us = graph_us(lambda: ours(inputs[m]), calls) if m <= 16 else eager
                bf16_us = None
                if m <= 16:
                    x_bf16 = inputs[m].to(torch.bfloat16)
                    bf16_us = graph_us(lambda: ours(x_bf16), calls)
                exl_us = time_us(lambda: exl(inputs[m]), calls) if exl else None
                moved = q4_bytes(k, n, groups, m)
                of_copy = moved / (us * 1e-6) / bandwidth
                vs_dense = dense_us[m] / us  # > 1: faster than the dense fp16 matmul
                if m == 1:
                    time_m1 = us
                    met = of_copy >= GOAL_BANDWIDTH
                    goal = f"{'met' if met else 'MISSED'} (>= {GOAL_BANDWIDTH:.0%} of copy)"
                elif m == 16 and time_m1:
                    met = us <= GOAL_M16_OVER_M1 * time_m1
                    goal = f"{'met' if met else 'MISSED'} ({us / time_m1:.2f}x M=1, goal <= {GOAL_M16_OVER_M1}x)"
                elif m == 2048:
                    met = vs_dense >= GOAL_DENSE
                    goal = f"{'met' if met else 'MISSED'} (>= {GOAL_DENSE:.0%} of dense)"
                else:
                    met, goal = None, ""
                results.append(dict(k=k, n=n, group=group, m=m, us=us, eager_us=eager, bf16_us=bf16_us,
                                    gbps=moved / (us * 1e-6) / 1e9, of_copy=of_copy, dense_us=dense_us[m],
                                    vs_dense=vs_dense, exllama_us=exl_us, goal_met=met))
                bf16_text = f"{bf16_us:>8.1f}" if bf16_us else f"{'-':>8}"
                exl_text = f"{exl_us:>10.1f} {exl_us / eager:>5.2f}x" if exl_us else f"{'-':>10} {'-':>6}"
                print(f"{k:>6} x {n:<6} {group:>5} {m:>5} {eager:>9.1f} {us:>9.1f} {moved / (us * 1e-6) / 1e9:>6.0f} "
                      f"{of_copy:>6.1%} {dense_us[m]:>9.1f} {vs_dense:>7.2f}x {bf16_text} {exl_text}  {goal}",
                      flush=True)
            del layers, theirs, ours, exl

    for against in ("dequantized", "ExLlama"):
        found = [c for c in checks if c[0] == against]
        if found:
            worst = max(found, key=lambda c: c[2])
            print(f"cross-check against {against}: max |y - ref| / max |ref| <= {worst[2]:.2e} over {len(found)} "
                  f"cases (worst: {worst[1]})")
    worst_ours = max(c[2] for c in checks if c[0] == "dequantized")
    goals = [r for r in results if r["goal_met"] is not None]
    missed = [r for r in goals if not r["goal_met"]]
    print(f"goals: {len(goals) - len(missed)} of {len(goals)} met on {properties.name}"
          + ("" if not missed else "; missed: " + ", ".join(f"{r['k']}x{r['n']} g{r['group']} M={r['m']}" for r in missed)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=properties.name, copy_gbps=bandwidth / 1e9, exllama=why_not or "compared",
                           checks=checks, results=results), f, indent=1)
    del exllama_buffers
    return 0 if worst_ours < 1e-2 else 1  # fp16 output and fp32 sums: ~1e-3


if __name__ == "__main__":
    sys.exit(main())
