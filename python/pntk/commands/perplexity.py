"""`pntk perplexity MODEL_DIR --contexts 512,1024,...`: perplexity against context length."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional


def parse_contexts(text: str) -> list[int]:
    try:
        contexts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"<command line>: --contexts: must be a comma-separated list of integers, got {text!r}") from None
    if not contexts or min(contexts) < 2:
        raise ValueError(f"<command line>: --contexts: each context must be at least 2 tokens, got {text!r}")
    return sorted(set(contexts))


def parse_methods(text: str) -> list[str]:
    from ..perplexity import RUNNER_METHODS

    methods = [part.strip() for part in text.split(",") if part.strip()]
    for method in methods:
        if method not in RUNNER_METHODS:
            raise ValueError(f"<command line>: --rope: must be one of {', '.join(RUNNER_METHODS)}, got {method!r}")
    if not methods:
        raise ValueError("<command line>: --rope: name at least one method")
    return methods


def progress(total: int, description: str):
    """A progress bar on stderr (only when stderr is a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="seq", file=sys.stderr, disable=None, leave=False)


def run_table(
    model,
    plans: dict,
    contexts: list[int],
    protocol: str,
    documents: Optional[list] = None,
    tokens: Optional[list] = None,
) -> dict:
    """{row label: {context: perplexity}}: each plan's tables swapped into the model in turn."""
    from .. import perplexity
    from ..integrations.transformers import apply

    if protocol == "truncated":
        work = len(plans) * len(contexts) * len(documents)
    else:
        work = len(plans) * sum(perplexity.sliding_windows(len(tokens), c) for c in contexts)
    results = {}
    with progress(work, "perplexity") as bar:
        for label, plan in plans.items():
            apply(model, plan=plan, announce=False)
            row = {}
            for context in contexts:
                bar.set_postfix_str(f"{label} @ {context}")
                if protocol == "truncated":
                    row[context] = perplexity.truncated(model, documents, context, step=bar.update)
                else:
                    row[context] = perplexity.sliding(model, tokens, context, step=bar.update)
            results[label] = row
    return results


def write_plot(path: str, results: dict, title: str) -> None:
    """A PNG of perplexity against context (log-log), one line per row; written atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError(f"{path}: --plot: needs the matplotlib package (pip install matplotlib)") from None
    import tempfile

    target = Path(path).resolve()
    if not target.parent.is_dir():
        raise ValueError(f"{path}: --plot: the directory {target.parent} does not exist")
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, row in results.items():
        contexts = sorted(row)
        axes.plot(contexts, [row[c] for c in contexts], marker="o", label=label)
    contexts = sorted({c for row in results.values() for c in row})
    axes.set_xscale("log", base=2)
    axes.set_xticks(contexts, [str(c) for c in contexts])
    axes.set_yscale("log")
    axes.set_xlabel("context length (tokens)")
    axes.set_ylabel("perplexity")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temporary, format="png", dpi=100)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    finally:
        plt.close(figure)


def load_text_tokens(path: str, tokenizer) -> list[int]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: (path): not found") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: (file): not UTF-8 text: {exc}") from None
    ids = tokenizer(text, add_special_tokens=False).input_ids
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + list(ids)


def quiet_transformers() -> None:
    """No Transformers progress bars or advice on stderr: the command shows its own progress."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _perplexity(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    quiet_transformers()

    from .. import perplexity
    from ..integrations.gptq_llama import is_gptq, load_llama, read_config
    from ..rope import RopePlan

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.documents < 1:
        raise ValueError(f"<command line>: --documents: must be positive, got {args.documents}")
    config = read_config(args.model_dir)
    contexts = parse_contexts(args.contexts) if args.contexts else perplexity.default_contexts(config)
    if args.rope:
        plans = perplexity.method_plans(config, parse_methods(args.rope), args.rope_factor)
    elif args.rope_factor is not None:
        raise ValueError("<command line>: --rope-factor: goes with --rope")
    else:
        plan = RopePlan.from_config(args.model_dir)
        plans = {f"{plan.method} (config.json)": plan}
    for plan in plans.values():
        print(plan.describe())
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model, _ = load_llama(args.model_dir, plan=next(iter(plans.values())), announce=False, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    weights = "GPTQ 4-bit through pntk's q4 matmul" if is_gptq(args.model_dir) else "float weights"
    if args.text:
        tokens = load_text_tokens(args.text, tokenizer)
        source = f"{args.text} ({len(tokens)} tokens)"
        documents = [tokens]
    else:
        documents = perplexity.builtin_corpus(
            lambda text: tokenizer(text, add_special_tokens=False).input_ids,
            tokenizer.bos_token_id, max(contexts), args.documents,
        )
        tokens = [t for doc in documents for t in doc]
        source = f"the built-in corpus ({len(documents)} held-out documents)"
    if args.protocol == "truncated" and min(map(len, documents)) < max(contexts):
        raise ValueError(
            f"{args.text or 'built-in corpus'}: --contexts: the text has {min(map(len, documents))} tokens, "
            f"fewer than the longest context {max(contexts)} (use --protocol sliding or shorter contexts)"
        )
    print(f"model: {args.model_dir} ({weights})")
    print(f"text: {source}")
    print(f"protocol: {perplexity.PROTOCOLS[args.protocol]}")
    results = run_table(model, plans, contexts, args.protocol, documents=documents, tokens=tokens)
    print(perplexity.format_table(results))
    if args.plot:
        write_plot(args.plot, results, f"{Path(args.model_dir).name}, {args.protocol} protocol: {source}")
        print(f"wrote {args.plot}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "perplexity",
        help="perplexity against context length for a Llama model directory (fp16 or GPTQ)",
        description="Perplexity of a Llama-architecture model directory (float or 4-bit GPTQ, run on the "
        "CPU with pntk's RoPE tables and q4 matmul) at several context lengths, on a text file or "
        "the built-in corpus.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR")
    parser.add_argument("--contexts", metavar="C1,C2,...",
                        help="context lengths in tokens (default: original length / 8, doubling to the extended length)")
    parser.add_argument("--text", metavar="FILE", help="a UTF-8 text file (default: the built-in corpus)")
    parser.add_argument("--documents", type=int, default=8, metavar="N",
                        help="built-in corpus documents (default 8)")
    parser.add_argument("--rope", metavar="METHOD[,METHOD...]",
                        help="override config.json's scaling: none, linear, ntk, pntk, yarn, dynamic (a list gives one row each)")
    parser.add_argument("--rope-factor", type=float, metavar="F",
                        help="scaling factor for --rope (default: max_position_embeddings / original length)")
    parser.add_argument("--protocol", choices=("truncated", "sliding"), default="truncated",
                        help="truncated: the first C tokens of each document; sliding: windows over the stream")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw perplexity against context (needs matplotlib)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="weights and activations other than the 4-bit matrices (bfloat16 halves the memory)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    parser.set_defaults(handler=_perplexity)
