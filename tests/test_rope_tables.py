"""cos/sin tables: within 1 ulp of cos(pos * inv_freq) evaluated in double, at every position."""
import numpy as np
import pytest
import torch

import pntk
from rope_configs import airophin_config, llama_config

MAX_POSITION = 65536
MAX_ULPS = 1


def ordered_bits(values: np.ndarray) -> np.ndarray:
    """Map float bit patterns to integers that count ulps across zero."""
    bits = values.view({2: np.int16, 4: np.int32}[values.itemsize]).astype(np.int64)
    sign_bit = 1 << (8 * values.itemsize - 1)
    return np.where(bits < 0, -(bits + sign_bit), bits)


def assert_within_ulps(table: torch.Tensor, expected_double: np.ndarray, numpy_dtype) -> None:
    got = table.numpy()
    assert np.isfinite(got).all()
    expected = expected_double.astype(numpy_dtype)  # numpy rounds once from double
    distance = np.abs(ordered_bits(got) - ordered_bits(expected)).max()
    assert distance <= MAX_ULPS, f"{distance} ulp"


@pytest.mark.parametrize("dtype,numpy_dtype", [(torch.float32, np.float32), (torch.float16, np.float16)])
def test_tables_every_position_up_to_64k(dtype, numpy_dtype):
    plan = pntk.RopePlan.from_config(airophin_config(16384, MAX_POSITION))
    cos, sin = plan.tables(MAX_POSITION, dtype=dtype)
    assert cos.shape == sin.shape == (MAX_POSITION, 128) and cos.dtype == dtype
    inv = plan.inv_freq().double().numpy()
    angles = np.arange(MAX_POSITION, dtype=np.float64)[:, None] * inv[None, :]  # exact in double
    half = 64
    assert torch.equal(cos[:, :half], cos[:, half:]) and torch.equal(sin[:, :half], sin[:, half:])
    assert_within_ulps(cos[:, :half], np.cos(angles), numpy_dtype)
    assert_within_ulps(sin[:, :half], np.sin(angles), numpy_dtype)


def test_bfloat16_tables_round_once():
    plan = pntk.RopePlan.from_config(airophin_config())
    cos, _ = plan.tables(4096, dtype=torch.bfloat16)
    assert cos.dtype == torch.bfloat16
    angles = np.arange(4096, dtype=np.float64)[:, None] * plan.inv_freq().double().numpy()[None, :]
    exact = torch.from_numpy(np.cos(angles))
    # bf16 has 8 significant bits: a correctly rounded value is within half a bf16 ulp of the exact one.
    error = (cos[:, :64].double() - exact).abs()
    half_ulp = torch.ldexp(torch.ones_like(exact), torch.frexp(exact.abs().clamp_min(1e-30))[1] - 9)
    assert (error <= half_ulp).all()


def test_attention_factor_is_folded_in():
    plan = pntk.RopePlan.from_config(
        llama_config(128, max_positions=16384,
                     rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096})
    )
    cos, sin = plan.tables(2048, dtype=torch.float32)
    angles = np.arange(2048)[:, None] * plan.inv_freq().double().numpy()[None, :]
    expected = (plan.attention_factor * np.cos(angles)).astype(np.float32)
    assert np.array_equal(cos[:, :64].numpy(), expected)
    assert cos.abs().max() > 1.0  # the factor is really there


def test_dynamic_tables_use_the_current_length():
    plan = pntk.RopePlan.from_config(llama_config(64, rope_scaling={"type": "dynamic", "factor": 2.0}))
    short_cos, _ = plan.tables(1000, dtype=torch.float32)
    long_cos, _ = plan.tables(12000, dtype=torch.float32)
    assert torch.equal(short_cos, pntk.RopePlan.from_config(llama_config(64)).tables(1000, dtype=torch.float32)[0])
    assert not torch.equal(long_cos[:1000], short_cos)


def test_default_length_is_the_extended_length_or_max_seq_len():
    plan = pntk.RopePlan.from_config(airophin_config())
    assert plan.tables()[0].shape == (16384, 128)
    plan = pntk.RopePlan.from_config(airophin_config(), max_seq_len=8192)
    assert plan.max_seq_len == 8192 and plan.tables()[0].shape == (8192, 128)
    assert "max_seq_len=8192" in plan.describe()


def test_bad_table_arguments_raise():
    plan = pntk.RopePlan.from_config(airophin_config())
    with pytest.raises(ValueError, match="dtype"):
        plan.tables(16, dtype=torch.int32)
    with pytest.raises(ValueError, match="seq_len"):
        plan.tables(-1)
