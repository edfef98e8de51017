"""pntk.integrations.transformers on a tiny random Llama (Transformers from PyPI, CPU, fp32).

References: (1) a forward pass written here from the Llama definition that takes its cos/sin from
pntk's tables; it is first checked against Transformers' own forward on an unscaled config, then
compared with the patched model on a config that needs scaling (pntk: Transformers has no such
method); (2) Transformers' own linear/yarn/llama3 implementations, which the patched model must
match.
The tolerance and why: see llama_reference.py.
"""
import pytest
import torch
from transformers import LlamaForCausalLM

from llama_reference import (
    PNTK_TINY,
    RELATIVE_TOLERANCE,
    TINY,
    WRONG_ROPE_MIN_RELATIVE_DIFF,
    inputs,
    logits_of,
    reference_logits,
    relative_max_diff,
    tiny_model,
    write_config,
)
from pntk import ConfigError, RopePlan
from pntk.integrations import transformers as pntk_tf


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


def test_accepted_config_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(ValueError, match=r"config\.json: \(path\): not found"):
        pntk_tf.accepted_config(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"config\.json: \(json\): "):
        pntk_tf.accepted_config(tmp_path)
