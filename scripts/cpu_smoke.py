"""A short end-to-end check of the built module on this CPU, for emulated CPUs (scripts/test_cpus.sh
runs it under qemu-x86_64 -cpu Nehalem / Haswell; pytest does not collect it):

  python scripts/cpu_smoke.py --kernel avx2    # the CPU kernel this CPU must get by default

Imports pntk, checks a RoPE plan's inv_freq against torch's own `base ** tensor` (bit for bit, as
torch_pow.h promises) and its cos/sin tables, then a Q4Matrix at M = 1 and M = 17 against the fp64
dequantization reference (tests/gptq_reference.py) with pytest's tolerances. PNTK_TEST_SEED=N
replays a run. Prints the time of each step (torch's import takes ~10 s under qemu).
"""
import argparse
import os
import pathlib
import secrets
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
CONFIG = ROOT / "tests" / "data" / "configs" / "valid" / "llama2-no-scaling.json"


def step(name, start):
    print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
    return time.perf_counter()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", required=True, help="the CPU kernel pntk must pick here (scalar, avx2, ...)")
    args = parser.parse_args()
    seed = int(os.environ.get("PNTK_TEST_SEED") or secrets.randbits(31))
    print(f"cpu_smoke: seed {seed} (replay with PNTK_TEST_SEED={seed}), expected kernel {args.kernel}", flush=True)

    t = time.perf_counter()
    import numpy as np
    import torch
    t = step(f"import torch {torch.__version__} (capability {torch.backends.cpu.get_cpu_capability()})", t)
    import pntk
    from pntk import q4
    import gptq_reference as ref
    t = step("import pntk", t)

    info = pntk.build_info()
    families = ", ".join(f["name"] if f["available"] else f"[{f['reason']}]" for f in q4.cpu_kernel_families())
    print(f"  kernel families: {families}; default {info['cpu_kernel']}")
    assert info["cpu_kernel"] == args.kernel, f"pntk picked {info['cpu_kernel']!r}, this CPU should get {args.kernel!r}"

    # theta 1e6 and 2.5e6: SLEEF's and glibc's powf differ on some of these 64 exponents (on none
    # at 1e4), so a torch_pow_block() that disagrees with ATen's choice on this CPU shows.
    for theta in (10000.0, 1e6, 2.5e6):
        plan = pntk.RopePlan.from_config(CONFIG, theta=theta)
        inv = plan.inv_freq()
        dim = 2 * inv.numel()
        reference = 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))  # torch's CPU pow on this CPU
        ulps = int((inv.view(torch.int32).long() - reference.view(torch.int32).long()).abs().max())
        assert ulps == 0, f"theta {theta:g}: inv_freq {ulps} ulp from torch's (torch_pow_block() is not ATen's here)"
    cos, sin = plan.tables(2048, dtype=torch.float32)
    angles = np.arange(2048, dtype=np.float64)[:, None] * inv.double().numpy()[None, :]
    for table, exact in ((cos, np.cos(angles)), (sin, np.sin(angles))):
        ulps = np.abs(table[:, : dim // 2].numpy().view(np.int32).astype(np.int64)
                      - exact.astype(np.float32).view(np.int32).astype(np.int64)).max()
        assert ulps <= 1, f"RoPE table {ulps} ulp from the double reference"
    t = step(f"RoPE {CONFIG.name}: inv_freq equals torch's (3 bases), tables within 1 ulp", t)

    rng = np.random.default_rng(seed)
    k, n = 384, 136  # 2 full tiles and a narrow one
    tensors = ref.random_gptq(k, n, 3, rng, act_order=True)
    w = pntk.Q4Matrix.from_gptq(**tensors)
    w64 = ref.dequantize(**tensors)
    for m in (1, 17):  # GEMV and GEMM
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            x = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)).to(dtype)
            error = ref.relative_error(w(x), ref.matmul(x, w64))
            assert error <= ref.TOLERANCE[dtype], f"M={m} {dtype}: relative error {error:.3g} (seed {seed})"
    step(f"Q4Matrix {k}x{n} at M=1 and M=17, fp16/bf16/fp32, within tolerance ({info['cpu_kernel']})", t)
    print("cpu_smoke: ok")


if __name__ == "__main__":
    main()
