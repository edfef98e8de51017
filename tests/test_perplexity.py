"""pntk.perplexity: per-method configs, and both protocols against Transformers' own loss."""
import math

import pytest
import torch

import pntk
from pntk import perplexity
from pntk.integrations import transformers as pntk_transformers

AIROPHIN_LIKE = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 50,
    "max_position_embeddings": 512,
    "original_max_position_embeddings": 128,
    "rope_scaling": None,
    "rope_theta": 10000.0,
}


@pytest.mark.parametrize("method", perplexity.RUNNER_METHODS)
def test_rope_config_describes_the_same_model_under_each_method(method):
    plan = pntk.RopePlan.from_config(perplexity.rope_config(AIROPHIN_LIKE, method))
    assert plan.method == method
    if method in ("none", "ntk"):
        assert plan.extended_max_position_embeddings == 512
    else:
        assert plan.original_max_position_embeddings == 128
    if method != "none":
        assert plan.factor == 4
    if method in ("linear", "pntk", "yarn"):
        assert plan.extended_max_position_embeddings == 512


def test_rope_config_methods_give_their_own_frequencies():
    plans = perplexity.method_plans(AIROPHIN_LIKE)
    base = plans["none"].inv_freq()
    assert torch.equal(plans["pntk"].inv_freq(), pntk.RopePlan.from_config(AIROPHIN_LIKE).inv_freq())
    # linear divides every frequency by 4; pntk keeps the fastest ones and slows the slowest by 4.
    torch.testing.assert_close(plans["linear"].inv_freq(), base / 4, rtol=2e-7, atol=0)
    assert plans["pntk"].inv_freq()[0] == base[0]
    torch.testing.assert_close(plans["pntk"].inv_freq()[-1], base[-1] / 4, rtol=2e-7, atol=0)
    assert len({tuple(p.inv_freq().tolist()) for p in plans.values()}) == len(plans)


def test_rope_config_factor_override_and_plain_models():
    plain = {k: v for k, v in AIROPHIN_LIKE.items() if k != "original_max_position_embeddings"}
    plan = pntk.RopePlan.from_config(perplexity.rope_config(plain, "yarn", factor=2))
    assert (plan.original_max_position_embeddings, plan.extended_max_position_embeddings, plan.factor) == (512, 1024, 2)
    with pytest.raises(ValueError, match="--rope-factor: must be at least 1"):
        perplexity.rope_config(plain, "linear", factor=0.5)
    with pytest.raises(ValueError, match="--rope: must be one of"):
        perplexity.rope_config(plain, "superhot")


def test_rope_config_reads_transformers5_rope_parameters():
    config = {k: v for k, v in AIROPHIN_LIKE.items() if k not in ("original_max_position_embeddings", "rope_theta")}
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
                                 "rope_theta": 500000.0}
    for method in ("none", "pntk", "linear"):
        plan = pntk.RopePlan.from_config(perplexity.rope_config(config, method))
        assert (plan.method, plan.theta) == (method, 500000.0)
        if method != "none":
            assert (plan.original_max_position_embeddings, plan.extended_max_position_embeddings) == (128, 512)


def test_default_contexts_run_from_an_eighth_of_the_original_to_the_extended_length():
    assert perplexity.default_contexts(AIROPHIN_LIKE) == [16, 32, 64, 128, 256, 512]
    assert perplexity.default_contexts({"max_position_embeddings": 1000, "original_max_position_embeddings": 250}) == [
        31, 62, 124, 248, 496, 992, 1000]


def random_model(seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in AIROPHIN_LIKE.items() if k != "rope_scaling"})).eval()
    pntk_transformers.apply(model, plan=pntk.RopePlan.from_config(AIROPHIN_LIKE), announce=False)
    return model


def reference_truncated(model, documents, context):
    """Transformers' own mean loss (labels = input_ids), weighted by scored tokens."""
    total = 0.0
    with torch.no_grad():
        for doc in documents:
            ids = torch.tensor([doc[:context]])
            total += float(model(input_ids=ids, labels=ids).loss) * (context - 1)
    return math.exp(total / (len(documents) * (context - 1)))


def reference_sliding(model, tokens, context):
    """The recipe of Transformers' perplexity guide: labels -100 on tokens already scored."""
    stride = context // 2
    ids = torch.tensor([tokens])
    nll, count, previous_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, ids.shape[1], stride):
            end = min(begin + context, ids.shape[1])
            target = end - previous_end
            window = ids[:, begin:end]
            labels = window.clone()
            labels[:, :-target] = -100
            scored = int((labels[:, 1:] != -100).sum())
            nll += float(model(input_ids=window, labels=labels).loss) * scored
            count += scored
            previous_end = end
            if end == ids.shape[1]:
                break
    return math.exp(nll / count)


def test_truncated_protocol_matches_transformers_loss(seed, generator):
    model = random_model(seed)
    documents = torch.randint(0, 50, (3, 300), generator=generator).tolist()
    for context in (16, 100, 300):
        got = perplexity.truncated(model, documents, context, batch_size=2)
        assert got == pytest.approx(reference_truncated(model, documents, context), rel=1e-5)
    assert 10 < got < 500  # a random model over 50 tokens: near 50, and finite


def test_sliding_protocol_matches_transformers_recipe(seed, generator):
    model = random_model(seed)
    tokens = torch.randint(0, 50, (333,), generator=generator).tolist()
    steps = []
    for context in (32, 128, 400):
        got = perplexity.sliding(model, tokens, context, step=steps.append)
        assert got == pytest.approx(reference_sliding(model, tokens, context), rel=1e-5)
        assert len(steps) == perplexity.sliding_windows(len(tokens), context)
        steps.clear()


def test_too_short_inputs_are_errors(seed):
    model = random_model(seed)
    with pytest.raises(ValueError, match="each must have at least 64 tokens"):
        perplexity.truncated(model, [[1] * 64, [1] * 63], 64)
    with pytest.raises(ValueError, match="need at least 2 tokens"):
        perplexity.sliding(model, [1], 64)


def test_non_finite_logits_are_an_error(seed, generator):
    model = random_model(seed)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    documents = torch.randint(0, 50, (1, 40), generator=generator).tolist()
    with pytest.raises(ValueError, match="non-finite"):
        perplexity.truncated(model, documents, 40)


def test_format_table_marks_the_configured_method():
    text = perplexity.format_table({"none": {32: 9.5, 64: 120.25}, "pntk": {32: 9.5, 64: 4.0}}, marked="pntk")
    lines = text.splitlines()
    assert lines[0].split() == ["context", "32", "64"]
    assert lines[1].split() == ["none", "9.50", "120.25"]
    assert lines[2].split() == ["pntk", "*", "9.50", "4.00"]
