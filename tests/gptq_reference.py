"""The GPTQ 4-bit format written out from DESIGN.md, in float64 numpy, for the tests only:
nothing here comes from pntk, so pntk's packer and kernels are checked against it.

  qweight int32 [K/8, N]: row k at bits 4*(k%8) of word k/8
  qzeros  int32 [G, N/8]: column n at bits 4*(n%8) of word n/8
  scales  fp16  [G, N];  g_idx int32 [K] (default k // (K/G))
  W[k, n] = scales[g, n] * (q[k, n] - zero[g, n]), g = g_idx[k];
  zero = (stored + 1) & 15 for "gptq" (v1), stored for "gptq_v2".
"""
import numpy as np
import torch

# Norm-wise relative error bounds by output dtype (the contract).
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 8e-3, torch.float32: 1e-5}


def unpack_rows(qweight: torch.Tensor) -> np.ndarray:
    words = qweight.numpy().view(np.uint32).astype(np.int64)  # [K/8, N]
    k = np.arange(words.shape[0] * 8)
    return (words[k // 8, :] >> (4 * (k % 8))[:, None]) & 15  # [K, N]


def unpack_columns(qzeros: torch.Tensor) -> np.ndarray:
    words = qzeros.numpy().view(np.uint32).astype(np.int64)  # [G, N/8]
    n = np.arange(words.shape[1] * 8)
    return (words[:, n // 8] >> (4 * (n % 8))[None, :]) & 15  # [G, N]


def dequantize(qweight, qzeros, scales, g_idx=None, checkpoint_format="gptq") -> np.ndarray:
    """W [K, N] float64."""
    q = unpack_rows(qweight)
    z = unpack_columns(qzeros)
    if checkpoint_format == "gptq":
        z = (z + 1) & 15
    k_total, groups = q.shape[0], z.shape[0]
    g = np.arange(k_total) // (k_total // groups) if g_idx is None else g_idx.numpy().astype(np.int64)
    return scales.numpy().astype(np.float64)[g] * (q - z[g]).astype(np.float64)


def matmul(x: torch.Tensor, w: np.ndarray, bias=None) -> np.ndarray:
    """x [M, K] (its exact values) @ W + bias, float64."""
    y = x.to(torch.float64).numpy() @ w
    if bias is not None:
        y = y + bias.to(torch.float64).numpy()
    return y


def relative_error(y: torch.Tensor, reference: np.ndarray) -> float:
    """||y - ref|| / ||ref||; inf when y has a NaN or inf (so NaN never passes)."""
    y64 = y.to(torch.float64).numpy()
    if not np.isfinite(y64).all():
        return float("inf")
    return float(np.linalg.norm(y64 - reference) / np.linalg.norm(reference))


def random_gptq(k, n, groups, rng, act_order=False, uneven=False, sym=False, checkpoint_format="gptq"):
    """Random GPTQ tensors (every bit pattern of qweight; zeros random or symmetric)."""
    qweight = torch.from_numpy(rng.integers(0, 2**32, size=(k // 8, n), dtype=np.uint64).astype(np.uint32).view(np.int32))
    if sym:
        stored = 8 if checkpoint_format == "gptq_v2" else 7  # v1 symmetric: 0x77777777
        zeros = np.full((groups, n), stored, dtype=np.int64)
    else:
        zeros = rng.integers(0, 16, size=(groups, n))
    shifts = 4 * np.arange(8)
    words = (zeros.reshape(groups, n // 8, 8) << shifts).sum(axis=2).astype(np.uint64).astype(np.uint32)
    qzeros = torch.from_numpy(words.view(np.int32))
    scales = torch.from_numpy((rng.standard_normal((groups, n)) * 0.02).astype(np.float16))
    if uneven:
        g = rng.integers(0, groups, size=k)
        g[:groups] = np.arange(groups)  # every group used at least once
        rng.shuffle(g)
    else:
        g = np.arange(k) // (k // groups)
        if act_order:
            rng.shuffle(g)
    g_idx = torch.from_numpy(g.astype(np.int32)) if (act_order or uneven) else None
    return dict(qweight=qweight, qzeros=qzeros, scales=scales, g_idx=g_idx)
