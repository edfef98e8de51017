"""`pntk make-tiny-model DIR`: write the built-in model as an airophin-style GPTQ checkpoint."""
from __future__ import annotations

import argparse


def _make_tiny_model(args: argparse.Namespace) -> int:
    from ..tiny_model.generator import make_tiny_model

    make_tiny_model(args.directory, force=args.force, log=print)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-tiny-model",
        help="write the built-in long-context model as a 4-bit GPTQ checkpoint",
        description="Write the built-in tiny Llama (trained at 256 positions, extended to 1024 with pntk "
        "scaling) as an airophin-style GPTQ directory: config.json, quantize_config.json, "
        "model.safetensors, tokenizer files. Deterministic.",
    )
    parser.add_argument("directory", metavar="DIR", help="directory to create")
    parser.add_argument("--force", action="store_true", help="replace DIR if it holds a GPTQ model")
    parser.set_defaults(handler=_make_tiny_model)
