"""`pntk demo`: the main job end to end on the built-in long-context GPTQ model, on the CPU."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_MODEL_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pntk" / "tiny-airophin-1k-GPTQ"
GENERATED_TOKENS = 24
PROMPT_WORDS_OF_COPY = 3


def retrieval_prompt(tokenizer, original_length: int, extended_length: int):
    """(prompt ids, expected continuation, distance): a held-out corpus document cut after the
    first words of a line that is a copy of one more than `original_length` tokens back, the
    prompt and its continuation within `extended_length` tokens."""
    import numpy as np

    from ..tiny_model import corpus

    rng = np.random.default_rng(corpus.EVALUATION_SEED)
    encode = lambda text: [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    while True:
        lines = corpus.lines(rng, extended_length)
        for index, line in enumerate(lines):
            if line not in lines[:index]:
                continue
            words = line.split(" ")
            prompt = encode(" ".join(lines[:index] + words[:PROMPT_WORDS_OF_COPY]))
            if len(prompt) + GENERATED_TOKENS > extended_length:
                break
            distance = len(prompt) - len(encode(" ".join(lines[: lines.index(line)])))
            if distance > original_length:
                return prompt, " ".join(words[PROMPT_WORDS_OF_COPY:]), distance


def _demo(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    import pntk

    from .. import perplexity
    from ..integrations.gptq_llama import load_llama, read_config
    from ..tiny_model import EXTENDED_LENGTH, ORIGINAL_LENGTH, SCALING_FACTOR
    from ..tiny_model.generator import make_tiny_model
    from .perplexity import run_table

    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    directory = Path(args.model_dir)
    print(f"== 1. the model: {directory}")
    if (directory / "quantize_config.json").is_file():
        print("already built (pntk make-tiny-model); reusing it")
    else:
        print("building it: quantizing the built-in float weights to 4-bit GPTQ (group 32, act-order)")
        make_tiny_model(directory, log=print)

    print("== 2. loading it into Transformers with pntk's RoPE tables and q4 matmul (CPU)")
    model, plan = load_llama(directory)
    q4_modules = sum(type(m).__name__ == "Q4Linear" for m in model.modules())
    print(f"{q4_modules} projections run pntk's 4-bit matmul (CPU kernel: {pntk.build_info().get('cpu_kernel', '?')})")

    print(f"== 3. generation: finishing a line first seen more than {ORIGINAL_LENGTH} tokens back")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    prompt, expected, distance = retrieval_prompt(tokenizer, ORIGINAL_LENGTH, EXTENDED_LENGTH)
    with torch.no_grad():
        output = model.generate(
            torch.tensor([prompt]), max_new_tokens=GENERATED_TOKENS, do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    generated = tokenizer.decode(output[0, len(prompt):], skip_special_tokens=True).strip()
    tail = tokenizer.decode(prompt[-24:], skip_special_tokens=True).strip()
    matched = 0
    for got, want in zip(generated.split(" "), expected.split(" ")):
        if got != want:
            break
        matched += 1
    print(f"prompt ({len(prompt)} tokens, ends): ... {tail}")
    print(f"generated: {generated}")
    print(f"the line's first occurrence, {distance} tokens back, continues: {expected}")
    print(f"{matched} words copied correctly from {distance} tokens back")

    config = read_config(directory)
    contexts = perplexity.default_contexts(config)
    print(f"== 4. perplexity against context length, per RoPE method (scaling factor {SCALING_FACTOR})")
    print(f"protocol: {perplexity.PROTOCOLS['truncated']}; {args.documents} held-out documents of the built-in corpus")
    documents = perplexity.builtin_corpus(
        lambda text: tokenizer(text, add_special_tokens=False).input_ids,
        tokenizer.bos_token_id, max(contexts), args.documents,
    )
    results = run_table(model, perplexity.method_plans(config), contexts, "truncated", documents=documents)
    print(perplexity.format_table(results, marked=plan.method))
    print(f"(* the model's own method, from config.json; original length {ORIGINAL_LENGTH}, extended {EXTENDED_LENGTH})")
    full = max(contexts)
    ratio = results["none"][full] / results["pntk"][full]
    print(f"at {full} tokens (4x the original length): pntk {results['pntk'][full]:.2f} vs no scaling "
          f"{results['none'][full]:.2f}, {ratio:.1f}x lower perplexity")
    print(f"== done in {time.time() - started:.0f} s")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job end to end on the built-in long-context GPTQ model (CPU)",
        description="Build the built-in tiny airophin-style GPTQ model if absent, load it through the "
        "Transformers integration with pntk's RoPE tables and q4 matmul, generate, and print "
        "perplexity against context length for none, linear, ntk, pntk and yarn scaling.",
    )
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR), metavar="DIR",
                        help=f"where the model is built or found (default {DEFAULT_MODEL_DIR})")
    parser.add_argument("--documents", type=int, default=8, metavar="N", help="corpus documents for perplexity")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    parser.set_defaults(handler=_demo)
