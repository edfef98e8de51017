#!/usr/bin/env python3
"""GPU benchmark of the q4 kernels at the Llama-2-13B shapes, with every ratio measured in
this run: against the device-to-device copy bandwidth (a large copy) and against torch's
dense fp16 matmul of the same shape.

    python scripts/bench_q4_gpu.py [--quick] [--json results.json]

Weights rotate over enough copies to exceed the GPU's L2 cache several times, so every call
reads its weights from DRAM. Bytes moved by a q4 call = weights (K*N/2) + scales (2*G*N)
+ zeros (G*N/2) + x (2*M*K) + y (2*M*N). Goals (H100): M=1 at >= 85% of the copy bandwidth,
M=16 within 1.3x of M=1's time, M=2048 at >= 80% of dense fp16 throughput.
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


def copy_bandwidth(device) -> float:
    """Bytes per second of a device-to-device copy (bytes read + bytes written)."""
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    us = time_us(lambda: dst.copy_(src), calls=20)
    return 2 * src.numel() / (us * 1e-6)


def random_layer(k: int, n: int, group: int, device, generator):
    """Random GPTQ tensors (act-order g_idx, like the airophin checkpoint) on the device."""
    groups = k // group
    qweight = torch.randint(-2**31, 2**31 - 1, (k // 8, n), dtype=torch.int32, device=device, generator=generator)
    qzeros = torch.randint(-2**31, 2**31 - 1, (groups, n // 8), dtype=torch.int32, device=device, generator=generator)
    scales = (torch.rand(groups, n, device=device, generator=generator) * 0.01 + 1e-3).to(torch.float16)
    g_idx = (torch.arange(k, device=device) // group).to(torch.int32)
    g_idx = g_idx[torch.randperm(k, device=device, generator=generator)]
    return dict(qweight=qweight, qzeros=qzeros, scales=scales, g_idx=g_idx, checkpoint_format="gptq")


def q4_bytes(k, n, groups, m) -> int:
    return k * n // 2 + 2 * groups * n + groups * n // 2 + 2 * m * k + 2 * m * n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per measurement")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_q4_gpu: error: no CUDA GPU visible", file=sys.stderr)
        return 2
    import pntk
    from pntk.q4_cuda import CudaQ4Backend

    if not pntk.build_info()["cuda"]:
        print("bench_q4_gpu: error: pntk was built without CUDA kernels", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    properties = torch.cuda.get_device_properties(device)
    bandwidth = copy_bandwidth(device)
    print(f"device: {properties.name}, {properties.multi_processor_count} SMs, torch {torch.__version__}, "
          f"pntk {pntk.__version__} {pntk.build_info()}")
    print(f"device-to-device copy: {bandwidth / 1e9:.0f} GB/s (read + write)")
    calls_small, calls_large = (30, 5) if args.quick else (200, 20)

    header = f"{'K x N':>13} {'group':>5} {'M':>5} {'us':>9} {'GB/s':>7} {'%copy':>6} {'dense us':>9} {'vs dense':>8}  goal"
    print(header)
    results = []
    for k, n in SHAPES:
        dense_bytes = 2 * k * n
        dense_copies = max(2, -(-ROTATE_BYTES // dense_bytes))
        dense_w = [torch.randn(k, n, device=device, generator=generator).to(torch.float16) for _ in range(dense_copies)]
        dense_us = {}
        for m in ROWS:
            x = torch.randn(m, k, device=device, generator=generator).to(torch.float16)
            state = {"i": 0}

            def dense_call():
                state["i"] = (state["i"] + 1) % dense_copies
                return torch.matmul(x, dense_w[state["i"]])

            dense_us[m] = time_us(dense_call, calls_large if m > 16 else calls_small)
        del dense_w
        for group in GROUPS:
            groups = k // group
            layer_bytes = q4_bytes(k, n, groups, 0)
            copies = max(2, -(-ROTATE_BYTES // layer_bytes))
            layers = [CudaQ4Backend(**random_layer(k, n, group, device, generator)) for _ in range(copies)]
            time_m1 = None
            for m in ROWS:
                x = torch.randn(m, k, device=device, generator=generator).to(torch.float16)
                state = {"i": 0}

                def q4_call():
                    state["i"] = (state["i"] + 1) % copies
                    return layers[state["i"]](x)

                us = time_us(q4_call, calls_large if m > 16 else calls_small)
                moved = q4_bytes(k, n, groups, m)
                gbps = moved / (us * 1e-6) / 1e9
                of_copy = moved / (us * 1e-6) / bandwidth
                vs_dense = dense_us[m] / us  # > 1: faster than the dense fp16 matmul
                if m == 1:
                    time_m1 = us
                    met = of_copy >= GOAL_BANDWIDTH
                    goal = f"{'met' if met else 'MISSED'} (>= {GOAL_BANDWIDTH:.0%} of copy)"
                elif m == 16:
                    met = us <= GOAL_M16_OVER_M1 * time_m1
                    goal = f"{'met' if met else 'MISSED'} ({us / time_m1:.2f}x M=1, goal <= {GOAL_M16_OVER_M1}x)"
                elif m == 2048:
                    met = vs_dense >= GOAL_DENSE
                    goal = f"{'met' if met else 'MISSED'} (>= {GOAL_DENSE:.0%} of dense)"
                else:
                    met, goal = None, ""
                row = dict(k=k, n=n, group=group, m=m, us=us, gbps=gbps, of_copy=of_copy, dense_us=dense_us[m],
                           vs_dense=vs_dense, goal_met=met)
                results.append(row)
                print(f"{k:>6} x {n:<6} {group:>5} {m:>5} {us:>9.1f} {gbps:>7.0f} {of_copy:>6.1%} "
                      f"{dense_us[m]:>9.1f} {vs_dense:>7.2f}x  {goal}", flush=True)
            del layers
            torch.cuda.empty_cache()

    goals = [r for r in results if r["goal_met"] is not None]
    missed = [r for r in goals if not r["goal_met"]]
    print(f"goals: {len(goals) - len(missed)} of {len(goals)} met on {properties.name}"
          + ("" if not missed else "; missed: " + ", ".join(f"{r['k']}x{r['n']} g{r['group']} M={r['m']}" for r in missed)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=properties.name, copy_gbps=bandwidth / 1e9, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
