"""`pntk demo`: the main job end to end on the built-in long-context GPTQ model, on the CPU."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_MODEL_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pntk" / "tiny-airophin-1k-GPTQ"
GENERATED_TOKENS = 24
PROMPT_TOKENS = 700


def topic_prompt(tokenizer, prompt_tokens: int) -> tuple[list[int], set]:
    """(ids, nouns): the first `prompt_tokens` tokens of a held-out corpus document, and the
    nouns they contain (the document's topic, as far as it has shown)."""
    import numpy as np

    from ..tiny_model import corpus

    text = corpus.document(np.random.default_rng(corpus.EVALUATION_SEED), prompt_tokens)
    ids = ([tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids)[:prompt_tokens]
    return ids, set(tokenizer.decode(ids, skip_special_tokens=True).split()) & set(corpus.NOUNS)


def _demo(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    import pntk

    from .. import perplexity
    from ..integrations.gptq_llama import load_llama, read_config
    from ..tiny_model import EXTENDED_LENGTH, ORIGINAL_LENGTH, SCALING_FACTOR, corpus
    from ..tiny_model.generator import make_tiny_model
    from .perplexity import quiet_transformers, run_table

    if args.documents < 1:
        raise ValueError(f"<command line>: --documents: must be positive, got {args.documents}")
    started = time.time()
    quiet_transformers()
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

    print(f"== 3. generation: continuing a {PROMPT_TOKENS}-token document (beyond the original {ORIGINAL_LENGTH})")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    prompt, topic = topic_prompt(tokenizer, PROMPT_TOKENS)
    with torch.no_grad():
        output = model.generate(
            torch.tensor([prompt]), max_new_tokens=GENERATED_TOKENS, do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    generated = tokenizer.decode(output[0, len(prompt):], skip_special_tokens=True).split()
    nouns = [word for word in generated if word in corpus.NOUNS]
    on_topic = sum(noun in topic for noun in nouns)
    print(f"prompt ends: ... {tokenizer.decode(prompt[-16:], skip_special_tokens=True)}")
    print(f"generated:  {' '.join(generated)}")
    print(f"{on_topic} of {len(nouns)} generated nouns belong to the document's topic "
          f"(the {len(topic)} of the {len(corpus.NOUNS)} nouns that appear in the prompt)")

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
    print(f"at {full} tokens ({SCALING_FACTOR}x the original length): pntk {results['pntk'][full]:.2f} vs no scaling "
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
    parser.add_argument("--documents", type=int, default=16, metavar="N", help="held-out corpus documents for perplexity (default 16)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    parser.set_defaults(handler=_demo)
