"""The built-in corpus, tokenizer and shipped float model (python/pntk/data/tiny_llama)."""
import json

import numpy as np
import pytest

from pntk.tiny_model import ARCHITECTURE, EXTENDED_LENGTH, FLOAT_MODEL_DIR, ORIGINAL_LENGTH, corpus, model_config
from pntk.tiny_model.tokenizer import TOKENIZER_FILES


def test_documents_are_deterministic_and_seed_dependent():
    assert corpus.documents(7, 2, 300) == corpus.documents(7, 2, 300)
    assert corpus.documents(7, 2, 300) != corpus.documents(8, 2, 300)


def test_sentences_follow_the_pattern_and_documents_keep_to_a_topic(rng):
    topics = []
    for _ in range(4):
        nouns = set()
        for sentence in corpus.sentences(rng, 200):
            the, adjective, noun, verb, the2, noun2, stop = sentence.split(" ")
            assert (the, the2, stop) == ("the", "the", ".")
            assert adjective in corpus.ADJECTIVES and verb in corpus.VERBS
            nouns |= {noun, noun2}
        assert nouns <= set(corpus.NOUNS) and len(nouns) <= corpus.TOPIC_NOUNS
        topics.append(nouns)
    assert len(set.union(*topics)) > corpus.TOPIC_NOUNS  # topics differ between documents


def test_rare_topic_nouns_first_appear_late(rng):
    """The long-range structure: in 1024-token documents, some topic nouns are first seen
    after the first 256 tokens."""
    first_seen = []
    for _ in range(20):
        words = corpus.document(rng, 1024).split(" ")[:1024]
        first_seen += [words.index(noun) for noun in set(words) & set(corpus.NOUNS)]
    assert sum(position >= 256 for position in first_seen) > len(first_seen) // 20


def test_shipped_model_directory_is_complete():
    for name in ("config.json", "model.safetensors", "training.json") + TOKENIZER_FILES:
        assert (FLOAT_MODEL_DIR / name).is_file(), name
    assert json.loads((FLOAT_MODEL_DIR / "config.json").read_text()) == model_config()
    record = json.loads((FLOAT_MODEL_DIR / "training.json").read_text())
    assert record["made_by"] == "scripts/train_tiny_model.py"
    assert [stage["rope"] for stage in record["stages"]] == ["none", "none", "pntk"]
    assert record["parameters"] < 10_000_000


def test_sentencepiece_and_transformers_tokenizers_agree(rng):
    import sentencepiece
    from transformers import AutoTokenizer

    sp = sentencepiece.SentencePieceProcessor(model_file=str(FLOAT_MODEL_DIR / "tokenizer.model"))
    hf = AutoTokenizer.from_pretrained(FLOAT_MODEL_DIR)
    assert sp.vocab_size() == len(hf) == ARCHITECTURE["vocab_size"]
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    assert (hf.unk_token_id, hf.bos_token_id, hf.eos_token_id) == (0, 1, 2)
    text = corpus.document(rng, 300) + " Hello, wörld! 42"
    ids = hf(text).input_ids
    assert ids == [1] + sp.encode(text)
    assert hf.decode(ids, skip_special_tokens=True) == sp.decode(sp.encode(text)) == text
    assert all(len(sp.encode(word)) == 1 for word in corpus.LEXICON + ("the", "."))


def test_shipped_float_model_uses_long_context_only_with_pntk():
    """The training record's float-model table (from the held-out corpus): pntk keeps gaining
    from context up to 4x the original length; without scaling the model breaks there."""
    table = json.loads((FLOAT_MODEL_DIR / "training.json").read_text())["perplexity"]["float_model"]
    pntk_row = {int(c): p for c, p in table["pntk"].items()}
    none_row = {int(c): p for c, p in table["none"].items()}
    assert all(np.isfinite(list(pntk_row.values())))
    assert pntk_row[EXTENDED_LENGTH] < pntk_row[ORIGINAL_LENGTH] < pntk_row[ORIGINAL_LENGTH // 8]
    assert none_row[EXTENDED_LENGTH] > 1.5 * pntk_row[EXTENDED_LENGTH]


def test_config_has_what_exllama_and_transformers_read():
    config = model_config()
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "rms_norm_eps",
                "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings",
                "original_max_position_embeddings", "rope_theta", "initializer_range", "architectures"):
        assert key in config, key
    assert config["max_position_embeddings"] == 4 * config["original_max_position_embeddings"]
    assert 256 <= config["original_max_position_embeddings"] <= 512
    for k in (config["hidden_size"], config["intermediate_size"]):
        assert k % 32 == 0


@pytest.mark.parametrize("method", ["pntk"])
def test_config_plan_is_the_airophin_one(method):
    import pntk

    plan = pntk.RopePlan.from_config(FLOAT_MODEL_DIR)
    assert plan.method == method and plan.factor == 4
    assert "scaling factor 4 (256 -> 1024 positions)" in plan.describe()
