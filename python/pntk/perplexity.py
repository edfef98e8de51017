"""Perplexity against context length, for any Llama-architecture model, per RoPE method.

Two protocols:
  truncated  each document's first C tokens (from its BOS), every prediction scored; the
             airophin model card's way of showing what a longer context buys.
  sliding    windows of C tokens over the token stream, advancing by C/2; a window scores only
             the tokens no earlier window scored, so each scored token sees C/2..C tokens of
             context (all of them, in the first window).
perplexity = exp(total negative log-likelihood / number of scored tokens).

The RoPE plan of each method is decided by the core (pntk.RopePlan) from the model's
config.json with its scaling entry replaced (`rope_config`); this module only edits the dict.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Optional

import torch

from .rope import RopePlan

PROTOCOLS = {
    "truncated": "truncated-document protocol: the first C tokens of each document, every token scored",
    "sliding": "sliding-window protocol: windows of C tokens advancing by C/2, new tokens scored",
}
TABLE_METHODS = ("none", "linear", "ntk", "pntk", "yarn")
RUNNER_METHODS = TABLE_METHODS + ("dynamic",)


def original_length(config: Mapping) -> int:
    """The pre-extension context length: original_max_position_embeddings (top level, then in
    rope_scaling / rope_parameters), else max_position_embeddings."""
    for holder in (config, config.get("rope_scaling") or {}, config.get("rope_parameters") or {}):
        if holder.get("original_max_position_embeddings"):
            return int(holder["original_max_position_embeddings"])
    return int(config["max_position_embeddings"])


def rope_config(config: Mapping, method: str, factor: Optional[float] = None) -> dict:
    """config.json with its RoPE scaling replaced by `method` at `factor`.

    factor defaults to max_position_embeddings / original length. The result describes the
    same model (original length L, extended length L * factor) in the dialect the core reads:
    none = no scaling entry at all; pntk = the airophin convention (top-level original length);
    ntk = type "ntk" (factor is the NTK alpha); dynamic = Transformers' convention
    (max_position_embeddings is the original length); linear and yarn carry the original length.
    """
    if method not in RUNNER_METHODS:
        raise ValueError(f"<command line>: --rope: must be one of {', '.join(RUNNER_METHODS)}, got {method!r}")
    result = copy.deepcopy(dict(config))
    original = original_length(result)
    if factor is None:
        factor = result["max_position_embeddings"] / original
    if not factor >= 1:
        raise ValueError(f"<command line>: --rope-factor: must be at least 1, got {factor:g}")
    extended = int(round(original * factor))
    for key in ("rope_scaling", "original_max_position_embeddings"):
        result.pop(key, None)
    if "rope_parameters" in result:  # Transformers 5: keep only the base
        theta = (result["rope_parameters"] or {}).get("rope_theta")
        result.pop("rope_parameters")
        if theta is not None:
            result["rope_theta"] = theta
    result["max_position_embeddings"] = extended
    if method == "pntk":
        result["original_max_position_embeddings"] = original
    elif method == "dynamic":
        result["max_position_embeddings"] = original
        result["rope_scaling"] = {"type": "dynamic", "factor": factor}
    elif method in ("linear", "yarn"):
        result["rope_scaling"] = {"type": method, "factor": factor, "original_max_position_embeddings": original}
    elif method == "ntk":
        result["rope_scaling"] = {"type": "ntk", "factor": factor}
    return result


def method_plans(config: Mapping, methods: Sequence[str] = TABLE_METHODS, factor: Optional[float] = None) -> dict:
    """{method: RopePlan} for the same model under each method."""
    return {method: RopePlan.from_config(rope_config(config, method, factor)) for method in methods}


def default_contexts(config: Mapping) -> list[int]:
    """original length / 8, doubling up to the extended length (max_position_embeddings)."""
    extended = int(config["max_position_embeddings"])
    context = max(original_length(config) // 8, 1)
    contexts = []
    while context < extended:
        contexts.append(context)
        context *= 2
    return contexts + [extended]


def builtin_corpus(encode: Callable[[str], list[int]], bos_id: Optional[int], tokens: int, documents: int) -> list[list[int]]:
    """`documents` held-out documents of the built-in corpus, each at least `tokens` tokens long."""
    import numpy as np

    from .tiny_model import corpus

    rng = np.random.default_rng(corpus.EVALUATION_SEED)
    result = []
    for _ in range(documents):
        words = tokens
        while True:
            ids = ([bos_id] if bos_id is not None else []) + encode(corpus.document(rng, words))
            if len(ids) >= tokens:
                break
            words *= 2  # a tokenizer that merges words
        result.append(ids)
    return result


@torch.no_grad()
def token_losses(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (fp32) of tokens 1.. given the ones before: [B, T] -> [B, T-1]."""
    logits = model(input_ids=input_ids).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
    ).view(input_ids.shape[0], -1)


def _check_finite(total: float, where: str) -> None:
    if not math.isfinite(total):
        raise ValueError(f"{where}: (logits): the model produced non-finite values")


def truncated(model, documents: Sequence[Sequence[int]], context: int, batch_size: int = 4, step=None) -> float:
    """Perplexity of the first `context` tokens of every document (each at least that long)."""
    if not documents or min(map(len, documents)) < context:
        raise ValueError(f"documents: each must have at least {context} tokens (the context)")
    total, count = 0.0, 0
    for start in range(0, len(documents), batch_size):
        batch = torch.tensor([list(doc[:context]) for doc in documents[start : start + batch_size]])
        losses = token_losses(model, batch)
        total += float(losses.sum())
        count += losses.numel()
        if step:
            step(batch.shape[0])
    _check_finite(total, f"context {context}")
    return math.exp(total / count)


def sliding(model, tokens: Sequence[int], context: int, step=None) -> float:
    """Perplexity of a token stream scored in windows of `context` tokens advancing by context/2."""
    if len(tokens) < 2 or context < 2:
        raise ValueError(f"tokens: need at least 2 tokens and a context of 2, got {len(tokens)} and {context}")
    stride = max(context // 2, 1)
    total, count, scored_until = 0.0, 0, 1  # token 0 has no context: never scored
    for begin in range(0, len(tokens) - 1, stride):
        end = min(begin + context, len(tokens))
        losses = token_losses(model, torch.tensor([list(tokens[begin:end])]))[0]
        new = losses[scored_until - begin - 1 :]  # losses[j] is token begin + j + 1
        total += float(new.sum())
        count += new.numel()
        scored_until = end
        if step:
            step(1)
        if end == len(tokens):
            break
    _check_finite(total, f"context {context}")
    return math.exp(total / count)


def sliding_windows(tokens: int, context: int) -> int:
    """How many windows `sliding` runs over a stream of `tokens` tokens."""
    stride = max(context // 2, 1)
    return max(1, math.ceil((tokens - context) / stride) + 1) if tokens > context else 1


def format_table(results: Mapping[str, Mapping[int, float]], marked: Optional[str] = None) -> str:
    """Rows of methods, columns of contexts; `marked` (the config's own method) gets a '*'."""
    contexts = sorted({c for row in results.values() for c in row})
    cells = {label: [f"{row[c]:.2f}" if c in row else "-" for c in contexts] for label, row in results.items()}
    width = 2 + max(len(text) for text in [str(c) for c in contexts] + [t for row in cells.values() for t in row])
    labels = {label: label + (" *" if label == marked else "") for label in results}
    first = 2 + max(len("context"), *(len(text) for text in labels.values()))
    lines = ["context".ljust(first) + "".join(str(c).rjust(width) for c in contexts)]
    for label, row in cells.items():
        lines.append(labels[label].ljust(first) + "".join(text.rjust(width) for text in row))
    return "\n".join(lines)
