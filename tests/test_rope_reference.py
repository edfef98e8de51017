"""inv_freq and attention factor of every method against Transformers' own RoPE init functions,
and pntk against an independent implementation of the airophin partial-NTK code written here."""
import itertools
import math

import numpy as np
import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import pntk
from rope_configs import airophin_config, llama_config

MAX_ULPS = 1  # the contract: within 1 ulp of the reference's fp32 values
ROTARY_DIMS = [64, 80, 100, 128]
BASES = [1e4, 5e5, 1e6]
FACTORS = [2, 3, 4, 8, 16, 2.5]
ORIGINAL_LENGTHS = [2048, 4096, 8192]

transformers.logging.set_verbosity_error()


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between two fp32 tensors of positive values."""
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a > 0).all() and (b > 0).all()
    return int((a.view(torch.int32).long() - b.view(torch.int32).long()).abs().max())


def transformers_reference(rope_parameters: dict, head_dim: int, max_positions: int, seq_len=None):
    config = transformers.LlamaConfig(
        hidden_size=head_dim * 8,
        num_attention_heads=8,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        rope_parameters=dict(rope_parameters),
    )
    rope_type = rope_parameters["rope_type"]
    if rope_type == "default":
        return transformers.models.llama.modeling_llama.LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)


def method_grid(method):
    for dim, base, factor, original in itertools.product(ROTARY_DIMS, BASES, FACTORS, ORIGINAL_LENGTHS):
        parameters = {"rope_type": method, "rope_theta": base, "factor": factor}
        max_positions = original
        if method in ("yarn", "llama3", "longrope"):
            parameters["original_max_position_embeddings"] = original
            max_positions = int(original * factor)
        if method == "llama3":
            parameters.update(low_freq_factor=1.0, high_freq_factor=4.0)
        yield dim, max_positions, parameters


@pytest.mark.parametrize("method", ["default", "linear", "dynamic", "yarn", "llama3"])
def test_inv_freq_matches_transformers(method):
    worst = 0
    cases = 0
    for dim, max_positions, parameters in method_grid(method):
        if method == "default":
            parameters = {"rope_type": "default", "rope_theta": parameters["rope_theta"]}
        reference, attention = transformers_reference(parameters, dim, max_positions)
        plan = pntk.RopePlan.from_config(llama_config(dim, max_positions=max_positions, rope_parameters=parameters))
        distance = ulp_distance(plan.inv_freq(), reference.float())
        assert distance <= MAX_ULPS, f"{method} d={dim} {parameters}: {distance} ulp"
        assert plan.attention_factor == pytest.approx(attention, rel=1e-15), parameters
        worst = max(worst, distance)
        cases += 1
    assert cases >= len(ROTARY_DIMS) * len(BASES) * len(ORIGINAL_LENGTHS)
    print(f"{method}: {cases} configs, worst {worst} ulp")


@pytest.mark.parametrize("seq_len", [4096, 5000, 8192, 16384, 65536])
def test_dynamic_follows_sequence_length(seq_len):
    parameters = {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 4.0}
    reference, _ = transformers_reference(parameters, 128, 4096, seq_len=seq_len)
    plan = pntk.RopePlan.from_config(llama_config(128, max_positions=4096, rope_parameters=parameters))
    assert ulp_distance(plan.inv_freq(seq_len), reference) <= MAX_ULPS
    if seq_len > 4096:
        assert not torch.equal(plan.inv_freq(seq_len), plan.inv_freq(4096))


def test_longrope_matches_transformers(rng):
    dim, original = 96, 4096
    long_factor = (1.0 + rng.random(dim // 2) * 7.0).tolist()
    short_factor = (1.0 + rng.random(dim // 2)).tolist()
    parameters = {
        "rope_type": "longrope",
        "rope_theta": 1e4,
        "long_factor": long_factor,
        "short_factor": short_factor,
        "original_max_position_embeddings": original,
    }
    plan = pntk.RopePlan.from_config(llama_config(dim, max_positions=4 * original, rope_parameters=parameters))
    for seq_len in (original, 4 * original):
        reference, attention = transformers_reference(parameters, dim, 4 * original, seq_len=seq_len)
        assert ulp_distance(plan.inv_freq(seq_len), reference) <= MAX_ULPS
        assert plan.attention_factor == pytest.approx(attention, rel=1e-15)


def test_ntk_by_parts_is_yarn_without_attention_scaling():
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}
    by_parts = dict(yarn, rope_type="ntk-by-parts")
    plan_yarn = pntk.RopePlan.from_config(llama_config(max_positions=16384, rope_scaling=yarn))
    plan_parts = pntk.RopePlan.from_config(llama_config(max_positions=16384, rope_scaling=by_parts))
    assert plan_parts.method == "yarn"
    assert torch.equal(plan_parts.inv_freq(), plan_yarn.inv_freq())
    assert plan_yarn.attention_factor == pytest.approx(1.1386294, abs=5e-8)
    assert plan_parts.attention_factor == 1.0
    assert "ntk-by-parts" in plan_parts.describe()
    assert "ntk-by-parts" not in plan_yarn.describe()


def test_yarn_check_values():
    for original, expected in [(4096, (20, 46)), (2048, (16, 41))]:
        parameters = {"type": "yarn", "factor": 4, "original_max_position_embeddings": original}
        plan = pntk.RopePlan.from_config(llama_config(max_positions=4 * original, rope_scaling=parameters))
        assert plan.correction_ranges == [("yarn", *expected)]


# ---- pntk: the airophin partial NTK -----------------------------------------------------------------


def partial_ntk_reference(dim, base, original, extended):
    """bhenrym14's partial NTK (final monkeypatch), written from its description in DESIGN.md, torch fp32."""
    scale = extended // original

    def correction(rotations):
        return dim * math.log(original / (2 * math.pi * rotations)) / (2 * math.log(base))

    def ramp(low_rot, high_rot):
        low = max(math.floor(correction(low_rot)), 0)
        high = min(math.ceil(correction(high_rot)), dim - 1)
        if low == high:
            high += 0.001
        return torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1), (low, high)

    exponents = torch.arange(0, dim, 2).float() / dim
    base_set = 1.0 / (base**exponents)
    linear_set = 1.0 / (scale * (base**exponents))
    ntk_set = 1.0 / ((base * scale ** (dim / (dim - 2))) ** exponents)
    ramp1, beta = ramp(1.25, 0.75)
    mask = 1 - ramp1
    mixed = linear_set * (1 - mask) + ntk_set * mask
    ramp2, gamma = ramp(16, 2)
    mask = 1 - ramp2
    return mixed * (1 - mask) + base_set * mask, scale, beta, gamma


@pytest.mark.parametrize("original,beta,gamma", [(4096, (43, 48), (25, 41)), (2048, (38, 43), (20, 36))])
def test_pntk_check_values(original, beta, gamma):
    plan = pntk.RopePlan.from_config(airophin_config(original, 4 * original))
    assert plan.method == "pntk"
    assert plan.factor == 4
    assert plan.attention_factor == 1.0
    assert plan.correction_ranges == [("beta", *beta), ("gamma", *gamma)]
    reference, scale, _, _ = partial_ntk_reference(128, 10000.0, original, 4 * original)
    assert ulp_distance(plan.inv_freq(), reference) <= MAX_ULPS


def test_pntk_factor_is_integer_division():
    plan = pntk.RopePlan.from_config(airophin_config(4096, 10000))
    assert plan.factor == 2  # 10000 // 4096
    reference, scale, _, _ = partial_ntk_reference(128, 10000.0, 4096, 10000)
    assert scale == 2
    assert ulp_distance(plan.inv_freq(), reference) <= MAX_ULPS


def test_pntk_matches_independent_formula_on_random_configs(rng):
    for _ in range(40):
        dim = int(rng.choice([64, 80, 96, 100, 128]))
        base = float(rng.choice([1e4, 5e5, 1e6, float(rng.uniform(5e3, 2e6))]))
        original = int(rng.choice([512, 1024, 2048, 4096, 8192]))
        extended = original * int(rng.integers(2, 17)) + int(rng.integers(0, original))
        config = llama_config(dim, max_positions=extended, rope_theta=base, original_max_position_embeddings=original)
        plan = pntk.RopePlan.from_config(config)
        reference, scale, beta, gamma = partial_ntk_reference(dim, base, original, extended)
        assert plan.factor == scale
        assert plan.correction_ranges == [("beta", *beta), ("gamma", *gamma)]
        assert ulp_distance(plan.inv_freq(), reference) <= MAX_ULPS, config


def test_explicit_pntk_type_equals_the_inferred_plan():
    explicit = llama_config(
        max_positions=16384, rope_scaling={"type": "pntk", "original_max_position_embeddings": 4096}
    )
    inferred = airophin_config()
    a, b = pntk.RopePlan.from_config(explicit), pntk.RopePlan.from_config(inferred)
    assert a.method == b.method == "pntk"
    assert torch.equal(a.inv_freq(), b.inv_freq())
    assert "inferred" in b.describe() and "inferred" not in a.describe()


# ---- runner overrides (ExLlama semantics) ---------------------------------------------------------------


@pytest.mark.parametrize("alpha,base", [(2.0, 20221.26), (4.0, 40889.94)])
def test_alpha_value_moves_the_base(alpha, base):
    plan = pntk.RopePlan.from_config(llama_config(128), alpha_value=alpha)
    assert plan.method == "ntk"
    assert plan.factor == alpha
    assert plan.base == pytest.approx(base, abs=0.005)
    # ExLlama: inv_freq = 1 / (base' ** (arange(0, d, 2).float() / d)), base' = 10000 * alpha^(d/(d-2))
    exllama_base = 10000.0 * alpha ** (128 / 126)
    reference = 1.0 / (exllama_base ** (torch.arange(0, 128, 2).float() / 128))
    assert ulp_distance(plan.inv_freq(), reference) <= MAX_ULPS
    assert f"alpha_value={alpha:g}" in plan.describe()


def test_alpha_moves_pntk_ranges_and_theta_replaces_base():
    plain = pntk.RopePlan.from_config(airophin_config())
    with_alpha = pntk.RopePlan.from_config(airophin_config(), alpha_value=2.0)
    assert with_alpha.method == "pntk"
    assert with_alpha.correction_ranges != plain.correction_ranges
    reference, *_ = partial_ntk_reference(128, 10000.0 * 2.0 ** (128 / 126), 4096, 16384)
    assert ulp_distance(with_alpha.inv_freq(), reference) <= MAX_ULPS
    with_theta = pntk.RopePlan.from_config(airophin_config(), theta=500000.0)
    reference, *_ = partial_ntk_reference(128, 500000.0, 4096, 16384)
    assert ulp_distance(with_theta.inv_freq(), reference) <= MAX_ULPS
    assert "theta=500000" in with_theta.describe()


def test_compress_pos_emb_divides_positions():
    plan = pntk.RopePlan.from_config(llama_config(64), compress_pos_emb=4.0)
    cos, sin = plan.tables(1000, dtype=torch.float32)
    angles = (np.arange(1000)[:, None] / 4.0) * plan.inv_freq().double().numpy()[None, :]
    assert np.array_equal(cos[:, :32].numpy(), np.cos(angles).astype(np.float32))
    assert "compress_pos_emb=4" in plan.describe()


def test_report_line_contract():
    plan = pntk.RopePlan.from_config(airophin_config())
    line = plan.describe()
    assert line.startswith("pntk: RoPE pntk, scaling factor 4 (4096 -> 16384 positions), base 10000, rotary dim 128")
    import re

    assert re.search(r"scaling factor (\d+(\.\d+)?)", line).group(1) == "4"
    plan = pntk.RopePlan.from_config(llama_config(rope_scaling={"type": "linear", "factor": 2.5}))
    assert re.search(r"scaling factor (\d+(\.\d+)?)", plan.describe()).group(1) == "2.5"


def test_announce_prints_once_unless_quiet(capsys, monkeypatch):
    plan = pntk.RopePlan.from_config(airophin_config())
    plan.announce("cuda:0")
    out = capsys.readouterr().out.splitlines()
    assert out == [plan.describe() + " [cuda:0]"]
    monkeypatch.setenv("PNTK_QUIET", "1")
    plan.announce()
    assert capsys.readouterr().out == ""


def test_rope_parameters_dialect_and_default_type():
    # Transformers 5 writes rope_parameters with rope_theta inside and rope_type "default".
    config = llama_config(128, max_positions=16384, original_max_position_embeddings=4096,
                          rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    plan = pntk.RopePlan.from_config(config)
    assert plan.method == "pntk" and plan.theta == 500000.0
    for no_scaling in (None, {"type": "none"}, {"rope_type": "default"}):
        plan = pntk.RopePlan.from_config(llama_config(128, rope_scaling=no_scaling))
        assert plan.method == "none" and plan.factor == 1
