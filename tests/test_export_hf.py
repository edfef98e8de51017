"""`pntk export --to hf`: Transformers 5 (from PyPI) loads the exported config.json and builds
pntk's inverse frequencies with attention scaling 1, and the model gives pntk's logits."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from pntk import RopePlan
from pntk.export import export_hf

from export_helpers import llama_config, random_static_config, ulp_distance, write_model_dir

STATIC_METHODS = ["pntk", "linear", "ntk", "yarn", "llama3"]
MAX_ULP = 1  # the factors reproduce inv_freq exactly where a float can, else within 1 ulp


def test_transformers_is_version_5():
    assert int(transformers.__version__.split(".")[0]) >= 5


@pytest.mark.parametrize("method", STATIC_METHODS)
def test_transformers_longrope_reproduces_the_plan(tmp_path, rng, method):
    config = random_static_config(method, rng)
    model = write_model_dir(tmp_path / "model", config)
    plan = RopePlan.from_config(model)
    export_hf(model)
    config = transformers.AutoConfig.from_pretrained(model)
    assert config.rope_parameters["rope_type"] == "longrope"
    expected = plan.inv_freq().numpy()
    original = plan.original_max_position_embeddings
    # Transformers switches between short (seq <= original) and long factors; both must hold.
    for seq_len in (original, original + 1, plan.extended_max_position_embeddings):
        inv_freq, attention = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu", seq_len=seq_len)
        ulps = ulp_distance(inv_freq.numpy(), expected)
        assert (ulps <= MAX_ULP).all(), f"{plan.describe()}: pairs {np.flatnonzero(ulps > MAX_ULP)} off"
        assert attention == plan.attention_factor
    if method == "pntk":
        assert plan.attention_factor == 1.0


def test_every_scaling_key_is_pinned(tmp_path, rng):
    """Transformers (attention_factor) and vLLM (short_mscale, long_mscale) each default to
    sqrt(1 + ln f / ln L) when their key is missing: all are written, equal to the plan's."""
    model = write_model_dir(tmp_path / "model", random_static_config("pntk", rng))
    export_hf(model)
    with open(os.path.join(model, "config.json")) as stream:
        written = json.load(stream)
    assert "rope_parameters" not in written  # one copy: Transformers 5 builds rope_parameters from it
    # vLLM's get_rope reads config.rope_parameters as Transformers 5 loads it.
    loaded = transformers.AutoConfig.from_pretrained(model).rope_parameters
    for scaling in (written["rope_scaling"], loaded):
        assert scaling["rope_type"] == "longrope"
        assert scaling["attention_factor"] == scaling["short_mscale"] == scaling["long_mscale"] == 1.0
        assert scaling["long_factor"] == scaling["short_factor"]
        assert scaling["original_max_position_embeddings"] == written["original_max_position_embeddings"]


def _tiny_llama(tmp_path, seed: int, head_dim: int, original: int, factor: int):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        **llama_config(head_dim, original_max_position_embeddings=original,
                       max_position_embeddings=original * factor),
        attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(config).eval()
    directory = str(tmp_path / "tiny-llama")
    model.save_pretrained(directory)
    return model, directory


def _patch_with_pntk(model, plan: RopePlan) -> None:
    """The pntk-patched Transformers model: its rotary embedding takes pntk's inverse frequencies
    and attention factor (what pntk's Transformers patch installs)."""
    rotary = model.model.rotary_emb
    rotary.inv_freq.copy_(plan.inv_freq())
    rotary.original_inv_freq = rotary.inv_freq.clone()
    rotary.attention_scaling = plan.attention_factor


def test_exported_model_gives_the_pntk_patched_logits(tmp_path, seed, generator):
    head_dim, original, factor = 64, 64, 4
    model, directory = _tiny_llama(tmp_path, seed, head_dim, original, factor)
    plan = RopePlan.from_config(directory)
    assert plan.method == "pntk" and plan.factor == factor
    unpatched_rotary = model.model.rotary_emb.inv_freq.clone()
    _patch_with_pntk(model, plan)

    export_hf(directory)
    exported = transformers.LlamaForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    rotary = exported.model.rotary_emb
    assert rotary.rope_type == "longrope"
    assert rotary.attention_scaling == 1.0

    tokens = torch.randint(0, model.config.vocab_size, (2, original * factor - 7), generator=generator)
    with torch.no_grad():
        expected = model(tokens).logits
        got = exported(tokens).logits
    # Beyond the original length Transformers switches to the long factors: check what it used.
    ulps = ulp_distance(rotary.inv_freq.numpy(), plan.inv_freq().numpy())
    assert ulps.max() <= MAX_ULP
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The comparison can fail: the unscaled model's logits are far from pntk's.
    assert not torch.equal(unpatched_rotary, plan.inv_freq())
    model.model.rotary_emb.inv_freq.copy_(unpatched_rotary)
    with torch.no_grad():
        unscaled = model(tokens).logits
    assert (unscaled - expected).abs().max() > 1e-3
