"""pntk.integrations.transformers on Transformers 4.31-4.44 (per-layer rotary embeddings), the line
text-generation-webui 1.6.1 pins (4.33).

These tests need that older Transformers, which cannot share an environment with the suite's
Transformers 5: scripts/make_tf433_env.sh makes a virtualenv with 4.33.3 and runs this file in it.
Under Transformers 5 the module is skipped as a whole. Tolerance and reference: llama_reference.py.
"""
import json

import pytest
import torch
import transformers

LEGACY = tuple(int(part) for part in transformers.__version__.split(".")[:2]) < (4, 45)
pytestmark = pytest.mark.skipif(
    not LEGACY, reason=f"Transformers {transformers.__version__}: legacy-only tests; scripts/make_tf433_env.sh runs them"
)

from llama_reference import (  # noqa: E402
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
from pntk import RopePlan  # noqa: E402
from pntk.integrations import transformers as pntk_tf  # noqa: E402

# Transformers 4.31-4.35 size their tables by the sequence length and index them with position_ids,
# so positions stay below the length here: a long sequence from position 0.
LENGTH = 200
YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}


def layer_rotaries(model):
    return [layer.self_attn.rotary_emb for layer in model.model.layers]


def test_pntk_config_patched_matches_reference_and_unpatched_does_not(tmp_path, seed, generator):
    model = tiny_model(PNTK_TINY, seed)
    input_ids, position_ids = inputs(generator, TINY["vocab_size"], TINY["max_position_embeddings"], LENGTH, start=0)
    unpatched = logits_of(model, input_ids, position_ids)
    plan = pntk_tf.apply(model, write_config(tmp_path, PNTK_TINY), announce=False)
    assert {rotary.style for rotary in layer_rotaries(model)} == {pntk_tf.SEQ_LEN_4D}
    cos, sin = plan.tables(TINY["max_position_embeddings"], dtype=torch.float32)
    reference = reference_logits(model, input_ids, position_ids, cos, sin)
    assert relative_max_diff(logits_of(model, input_ids, position_ids), reference) < RELATIVE_TOLERANCE
    assert relative_max_diff(unpatched, reference) > WRONG_ROPE_MIN_RELATIVE_DIFF


def test_patched_linear_matches_transformers_own(tmp_path, seed, generator):
    config = dict(TINY, rope_scaling={"type": "linear", "factor": 4.0})
    model = tiny_model(config, seed)
    input_ids, position_ids = inputs(generator, TINY["vocab_size"], TINY["max_position_embeddings"], LENGTH, start=0)
    native = logits_of(model, input_ids, position_ids)
    assert pntk_tf.apply(model, write_config(tmp_path, config), announce=False).method == "linear"
    assert relative_max_diff(logits_of(model, input_ids, position_ids), native) < RELATIVE_TOLERANCE


@pytest.mark.parametrize("rope_scaling", [YARN, {"type": "linear", "factor": 4}], ids=["yarn", "int-factor"])
def test_config_that_transformers_refuses_is_accepted_then_scaled(tmp_path, seed, generator, rope_scaling):
    from transformers import AutoConfig, LlamaForCausalLM

    directory = tmp_path / "model"
    directory.mkdir()
    write_config(directory, dict(TINY, rope_scaling=rope_scaling))
    with pytest.raises(ValueError, match="rope_scaling"):
        AutoConfig.from_pretrained(directory)
    config = pntk_tf.accepted_config(directory)
    assert config.rope_scaling is None and config.pntk_rope_scaling == rope_scaling
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    plan = pntk_tf.apply(model, announce=False)  # from model.config: pntk_rope_scaling is read back
    assert plan.method == rope_scaling["type"]
    input_ids, position_ids = inputs(generator, TINY["vocab_size"], TINY["max_position_embeddings"], LENGTH, start=0)
    cos, sin = RopePlan.from_config(directory).tables(TINY["max_position_embeddings"], dtype=torch.float32)
    reference = reference_logits(model, input_ids, position_ids, cos, sin)
    assert relative_max_diff(logits_of(model, input_ids, position_ids), reference) < RELATIVE_TOLERANCE


def test_loaders_that_read_the_config_themselves(tmp_path, seed):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    directory = tmp_path / "model"
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**TINY)).save_pretrained(directory)
    values = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(dict(values, rope_scaling=YARN)))
    with pntk_tf.accepting_rope_scaling():
        model = AutoModelForCausalLM.from_pretrained(directory)
    assert pntk_tf.apply(model, announce=False).method == "yarn"
    with pytest.raises(ValueError, match="rope_scaling"):  # the class is restored afterwards
        AutoModelForCausalLM.from_pretrained(directory)
