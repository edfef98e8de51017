"""The built-in model's tokenizer: a Llama-style sentencepiece BPE model (unk 0, bos 1, eos 2,
byte fallback) trained on the corpus, plus the Transformers files that go beside it."""
from __future__ import annotations

import io
import json
from collections.abc import Iterable

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "add_bos_token": True,
    "add_eos_token": False,
    "legacy": False,
    "clean_up_tokenization_spaces": False,
    **SPECIAL_TOKENS,
}


def train_sentencepiece(sentences: Iterable[str], vocab_size: int) -> bytes:
    """A serialized sentencepiece BPE model trained on `sentences` (deterministic: one thread)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def write_transformers_files(directory) -> None:
    """tokenizer_config.json and special_tokens_map.json beside tokenizer.model, then
    tokenizer.json converted by Transformers (needs the sentencepiece and protobuf packages)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    directory = Path(directory)
    (directory / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2) + "\n")
    AutoTokenizer.from_pretrained(directory).backend_tokenizer.save(str(directory / "tokenizer.json"))
