"""pntk.integrations.transformers on a tiny random Llama (Transformers from PyPI, CPU, fp32).

References: (1) a forward pass written here from the Llama definition that takes its cos/sin from
pntk's tables; it is first checked against Transformers' own forward on an unscaled config, then
compared with the patched model on a config that needs scaling (pntk: Transformers has no such
method); (2) Transformers' own linear/yarn/llama3 implementations, which the patched model must
match.

Tolerance: everything runs in fp32 with identical weights and identical fp32 tables, so the only
differences are summation order in matmul/softmax (about 1e-6 relative per op, 2 layers);
TOLERANCE = 1e-4 * max|logit| leaves a wide margin, while a wrong RoPE table moves logits by
several percent of their range (asserted for the unpatched model).
"""
import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from pntk import ConfigError, RopePlan  # noqa: E402
from pntk.integrations import transformers as pntk_tf  # noqa: E402

RELATIVE_TOLERANCE = 1e-4
WRONG_ROPE_MIN_RELATIVE_DIFF = 1e-2  # an unpatched model must be at least this far off

TINY = dict(
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention, head_dim 16
    num_hidden_layers=2,
    vocab_size=97,
    rms_norm_eps=1e-5,
    max_position_embeddings=256,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    initializer_range=0.25,  # sharp attention: positions matter to the logits
)
PNTK_TINY = dict(TINY, original_max_position_embeddings=64)  # airophin style: s = 256 // 64 = 4


def tiny_model(config: dict, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="eager"))
    with torch.no_grad():  # LayerNorm weights start at 1: draw them too, so no weight is trivial
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    return model.eval()


def write_config(tmp_path, config: dict):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(config, model_type="llama", architectures=["LlamaForCausalLM"])))
    return path


def reference_logits(model, input_ids, position_ids, cos, sin):
    """Llama forward from its definition, in float64, RoPE from the given [positions, d] tables."""
    c = model.config
    w = {k: v.double() for k, v in model.state_dict().items()}
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
    head_dim = c.hidden_size // heads
    batch, length = input_ids.shape
    cos, sin = cos.double()[position_ids][:, None], sin.double()[position_ids][:, None]  # [B, 1, T, d]

    def rms_norm(x, weight):
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.rms_norm_eps)

    def rotate_half(x):  # NeoX layout: pairs (i, i + d/2)
        return torch.cat((-x[..., head_dim // 2 :], x[..., : head_dim // 2]), dim=-1)

    def heads_of(x, count):
        return x.view(batch, length, count, head_dim).transpose(1, 2)

    causal = torch.full((length, length), -math.inf, dtype=torch.float64).triu(1)
    h = w["model.embed_tokens.weight"][input_ids]
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"])
        q = heads_of(x @ w[p + "self_attn.q_proj.weight"].T, heads)
        k = heads_of(x @ w[p + "self_attn.k_proj.weight"].T, kv_heads)
        v = heads_of(x @ w[p + "self_attn.v_proj.weight"].T, kv_heads)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal
        attention = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, -1)
        h = h + attention @ w[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(x @ w[p + "mlp.gate_proj.weight"].T)
        h = h + (gate * (x @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rms_norm(h, w["model.norm.weight"]) @ w["lm_head.weight"].T


def inputs(generator, vocab, max_position):
    length = 40
    offset = int(torch.randint(0, max_position - length, (1,), generator=generator))
    input_ids = torch.randint(0, vocab, (2, length), generator=generator)
    position_ids = (torch.arange(length) + offset).expand(2, -1)
    return input_ids, position_ids


def logits_of(model, input_ids, position_ids):
    with torch.no_grad():
        return model(input_ids=input_ids, position_ids=position_ids).logits.double()


def relative_max_diff(a, b):
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return float((a - b).abs().max() / b.abs().max())


def test_reference_matches_transformers_without_scaling(tmp_path, seed, generator):
    # Validates the test's own reference: Transformers' forward, unscaled RoPE, same tables.
    model = tiny_model(TINY, seed)
    plan = RopePlan.from_config(write_config(tmp_path, TINY))
    assert plan.method == "none"
    input_ids, position_ids = inputs(generator, TINY["vocab_size"], TINY["max_position_embeddings"])
    cos, sin = plan.tables(TINY["max_position_embeddings"], dtype=torch.float32)
    reference = reference_logits(model, input_ids, position_ids, cos, sin)
    assert relative_max_diff(logits_of(model, input_ids, position_ids), reference) < RELATIVE_TOLERANCE


def test_pntk_model_patched_matches_reference_and_unpatched_does_not(tmp_path, seed, generator, capsys):
    model = tiny_model(PNTK_TINY, seed)
    config_path = write_config(tmp_path, PNTK_TINY)
    input_ids, position_ids = inputs(generator, TINY["vocab_size"], TINY["max_position_embeddings"])
    unpatched = logits_of(model, input_ids, position_ids)

    plan = pntk_tf.apply(model, config_path)
    assert "scaling factor 4 (64 -> 256 positions)" in capsys.readouterr().out
    assert plan.method == "pntk"
    cos, sin = plan.tables(TINY["max_position_embeddings"], dtype=torch.float32)
    reference = reference_logits(model, input_ids, position_ids, cos, sin)
    patched = logits_of(model, input_ids, position_ids)
    assert relative_max_diff(patched, reference) < RELATIVE_TOLERANCE
    assert relative_max_diff(unpatched, reference) > WRONG_ROPE_MIN_RELATIVE_DIFF


@pytest.mark.parametrize(
    "rope_scaling",
    [
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64},
    ],
    ids=lambda scaling: scaling["rope_type"],
)
def test_patched_model_matches_transformers_own_scaling(tmp_path, seed, generator, rope_scaling):
    config = dict(TINY, rope_scaling=rope_scaling)
    model = tiny_model(config, seed)
    input_ids, position_ids = inputs(generator, TINY["vocab_size"], TINY["max_position_embeddings"])
    native = logits_of(model, input_ids, position_ids)
    plan = pntk_tf.apply(model, write_config(tmp_path, config), announce=False)
    assert plan.method == rope_scaling["rope_type"]
    assert isinstance(model.model.rotary_emb, pntk_tf.PntkRotaryEmbedding)
    assert relative_max_diff(logits_of(model, input_ids, position_ids), native) < RELATIVE_TOLERANCE


def test_apply_reads_the_config_the_model_was_loaded_from(tmp_path, seed):
    model = tiny_model(PNTK_TINY, seed)
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert pntk_tf.apply(loaded, announce=False).method == "pntk"


def test_tables_grow_past_their_end(tmp_path, seed):
    plan = RopePlan.from_config(write_config(tmp_path, PNTK_TINY))
    rotary = pntk_tf.PntkRotaryEmbedding(plan)
    x = torch.zeros(1, 1, dtype=torch.float32)
    cos, sin = rotary(x, torch.tensor([[0, 300]]))
    expected_cos, expected_sin = plan.tables(301, dtype=torch.float32)
    assert torch.equal(cos[0, 1], expected_cos[300]) and torch.equal(sin[0, 1], expected_sin[300])


@pytest.mark.parametrize("style", [pntk_tf.SEQ_LEN_4D, pntk_tf.SEQ_LEN_2D])
def test_seq_len_styles_return_the_leading_rows(tmp_path, style):
    plan = RopePlan.from_config(write_config(tmp_path, PNTK_TINY))
    rotary = pntk_tf.PntkRotaryEmbedding(plan, style=style)
    cos, sin = rotary(torch.zeros(1, dtype=torch.float16), seq_len=300)
    expected_cos, expected_sin = plan.tables(300, dtype=torch.float16)
    if style == pntk_tf.SEQ_LEN_4D:
        assert cos.shape == (1, 1, 300, 16)
        cos, sin = cos[0, 0], sin[0, 0]
    assert torch.equal(cos, expected_cos) and torch.equal(sin, expected_sin)


def test_bad_config_names_file_and_field(tmp_path, seed):
    model = tiny_model(TINY, seed)
    path = write_config(tmp_path, dict(TINY, rope_scaling={"rope_type": "yarn", "factor": -2.0}))
    with pytest.raises(ConfigError, match=r"config\.json.*factor"):
        pntk_tf.apply(model, path)


def test_model_without_rotary_embedding_is_refused():
    plan = RopePlan.from_config(dict(TINY, model_type="llama"))
    with pytest.raises(ValueError, match="rotary_emb: not found"):
        pntk_tf.apply(torch.nn.Sequential(torch.nn.Linear(2, 2)), plan=plan)
