"""RoPE on a CUDA GPU (pntk.cuda): device tables against the CPU tables of the same plan, and
the in-place rotation against Transformers' apply_rotary_pos_emb evaluated in fp64."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import pntk
from pntk import RopePlan
from pntk import cuda as pntk_cuda

# Skipped only without a GPU; with one, a build without CUDA kernels fails these tests.
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU visible (torch.cuda.is_available() is False)")

AIROPHIN = Path(pntk.__file__).parent / "examples" / "airophin-13b-pntk-16k"
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
HALF_SUBNORMAL_STEP = {torch.float32: 2.0**-150, torch.float16: 2.0**-25, torch.bfloat16: 2.0**-134}  # rounding floor
INT_VIEW = {torch.float32: (torch.int32, 0x7FFFFFFF), torch.float16: (torch.int16, 0x7FFF),
            torch.bfloat16: (torch.int16, 0x7FFF)}

PLANS = {
    "pntk (airophin)": lambda: RopePlan.from_config(AIROPHIN),
    "yarn, attention factor": lambda: RopePlan.from_config(
        {"rope_theta": 10000.0, "hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 16384,
         "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}}),
    "linear with compress_pos_emb 2": lambda: RopePlan.from_config(
        {"rope_theta": 10000.0, "hidden_size": 5120, "num_attention_heads": 40, "max_position_embeddings": 8192,
         "rope_scaling": {"type": "linear", "factor": 2.0}}, compress_pos_emb=2.0),
}


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Units in the last place between two tensors of one float dtype (sign-magnitude order)."""
    int_type, magnitude_mask = INT_VIEW[a.dtype]

    def ordered(t):
        bits = t.contiguous().view(int_type).long()
        return torch.where(bits < 0, -(bits & magnitude_mask), bits)

    return (ordered(a) - ordered(b)).abs()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(PLANS))
def test_device_tables_match_the_cpu_tables(name, dtype):
    plan = PLANS[name]()
    cos_gpu, sin_gpu = plan.tables(dtype=dtype, device="cuda")
    cos_cpu, sin_cpu = plan.tables(dtype=dtype)
    assert cos_gpu.device.type == "cuda" and cos_gpu.shape == cos_cpu.shape == (plan.max_seq_len, plan.rotary_dim)
    for gpu, cpu, what in ((cos_gpu, cos_cpu, "cos"), (sin_gpu, sin_cpu, "sin")):
        assert bool(torch.isfinite(gpu).all())
        distance = ulp_distance(gpu.cpu(), cpu)
        assert int(distance.max()) <= 1, f"{what}: {int((distance > 1).sum())} entries more than 1 ulp apart"


def test_tables_are_written_in_place_at_an_offset():
    plan = PLANS["pntk (airophin)"]()
    cos = torch.full((1, 1, 100, plan.rotary_dim), float("nan"), dtype=torch.float16, device="cuda")
    sin = torch.full_like(cos, float("nan"))
    pntk_cuda.write_rope_tables(plan, cos, sin, first_position=5000)
    cos_cpu, sin_cpu = plan.tables(seq_len=5100, dtype=torch.float16)
    assert int(ulp_distance(cos.cpu()[0, 0], cos_cpu[5000:]).max()) <= 1
    assert int(ulp_distance(sin.cpu()[0, 0], sin_cpu[5000:]).max()) <= 1


def reference_rotation(x, cos, sin, positions):
    """Transformers' rotation in fp64 of x [b, s, h, d] by tables [rows, r] at positions [b, s]."""
    rotary = cos.shape[-1]
    q = x.double().transpose(1, 2)  # [b, h, s, d], Transformers' layout
    rotated, _ = apply_rotary_pos_emb(q[..., :rotary], q[..., :rotary], cos.double()[positions], sin.double()[positions])
    return torch.cat((rotated, q[..., rotary:]), dim=-1).transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rotary_fraction", [1.0, 0.5])
@pytest.mark.parametrize("positions_kind", ["offset", "int32 [seq]", "int64 [batch, seq]"])
def test_apply_matches_transformers(generator, dtype, rotary_fraction, positions_kind):
    batch, seq, heads, head_dim, rows = 2, 37, 5, 128, 4096
    rotary = int(head_dim * rotary_fraction)
    plan = RopePlan.from_config({"rope_theta": 10000.0, "hidden_size": heads * rotary, "num_attention_heads": heads,
                                 "max_position_embeddings": rows})
    cos, sin = plan.tables(seq_len=rows, dtype=dtype, device="cuda")
    # x in Transformers' layout [b, h, s, d]; the kernel gets the strided [b, s, h, d] view.
    x_bhsd = torch.randn(batch, heads, seq, head_dim, generator=generator).to(dtype)
    x = x_bhsd.cuda().transpose(1, 2)
    if positions_kind == "offset":
        offset = int(torch.randint(0, rows - seq, (1,), generator=generator))
        positions = torch.arange(offset, offset + seq).expand(batch, seq)
        argument = offset
    elif positions_kind == "int32 [seq]":
        positions = torch.randint(0, rows, (seq,), generator=generator).expand(batch, seq)
        argument = positions[0].to(torch.int32).cuda()
    else:
        positions = torch.randint(0, rows, (batch, seq), generator=generator)
        argument = positions.cuda()
    x64 = x_bhsd.transpose(1, 2).double()
    expected = reference_rotation(x64, cos.cpu(), sin.cpu(), positions)
    result = pntk_cuda.apply_rotary_(x, cos, sin, argument)
    assert result is x
    c, s = cos.cpu().double()[positions].unsqueeze(2), sin.cpu().double()[positions].unsqueeze(2)
    half = rotary // 2
    partner = torch.cat((x64[..., half:rotary], x64[..., :half]), dim=-1).abs()
    terms = x64[..., :rotary].abs() * c.abs() + partner * s.abs()  # fp32 products and sum
    bound = torch.cat((UNIT_ROUNDOFF[dtype] * expected[..., :rotary].abs() + 2.0**-22 * terms + HALF_SUBNORMAL_STEP[dtype],
                       torch.zeros_like(x64[..., rotary:])), dim=-1)
    error = (x.cpu().double() - expected).abs()
    assert bool((error <= bound).all()), f"{int((error > bound).sum())} of {error.numel()} values outside the bound"


def test_positions_outside_the_table_are_refused_before_writing(generator):
    plan = RopePlan.from_config({"rope_theta": 10000.0, "hidden_size": 512, "num_attention_heads": 4,
                                 "max_position_embeddings": 100})
    cos, sin = plan.tables(dtype=torch.float16, device="cuda")
    x = torch.randn(1, 8, 4, 128, generator=generator).to(torch.float16).cuda()
    before = x.clone()
    with pytest.raises(ValueError, match=r"^positions: values 3 to 100 are outside the table \(100 rows\)"):
        pntk_cuda.apply_rotary_(x, cos, sin, torch.tensor([3, 4, 5, 6, 7, 8, 9, 100], device="cuda"))
    with pytest.raises(ValueError, match=r"^positions: 95 to 102 are outside the table \(100 rows\)"):
        pntk_cuda.apply_rotary_(x, cos, sin, 95)
    with pytest.raises(ValueError, match=r"^cos: must have the dtype of x \(float16\), got float32"):
        pntk_cuda.apply_rotary_(x, cos.float(), sin.float(), 0)
    assert torch.equal(x, before)
