"""`pntk export --to hf|gguf|exllamav2 MODEL_DIR`: the RoPE plan in a form other engines read."""
from __future__ import annotations

import argparse

TARGETS = ("hf", "gguf", "exllamav2")


def _default_gguf_out(gguf_in: str) -> str:
    stem = gguf_in[: -len(".gguf")] if gguf_in.endswith(".gguf") else gguf_in
    return stem + ".pntk.gguf"


def _export(args: argparse.Namespace) -> int:
    from ..export import export_gguf, export_hf

    if args.to == "gguf":
        if not args.gguf:
            raise ValueError("<command line>: --gguf: --to gguf needs the GGUF file to copy (--gguf MODEL.gguf)")
        result = export_gguf(args.model, args.gguf, args.out or _default_gguf_out(args.gguf))
        print(result.plan.describe())
        action = "replaced" if result.replaced_rope_freqs else "added"
        print(f"wrote {result.path}: {action} rope_freqs [{result.plan.rotary_dim // 2}] and the rope keys "
              f"(copy of {result.source})")
        return 0
    if args.gguf:
        raise ValueError(f"<command line>: --gguf: only for --to gguf, not --to {args.to}")
    result = export_hf(args.model, args.out)
    print(result.plan.describe())
    kept = f" (original kept as {result.backup_path})" if result.backup_path else ""
    print(f"wrote {result.config_path}: rope type longrope{kept}")
    if args.to == "exllamav2":
        print("ExLlamaV2 reads these factors but scales attention on its own when the context is extended: "
              "load it with pntk.integrations.exllamav2.install() or the patch in patches/exllamav2")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the RoPE scaling for Transformers 5 / vLLM (hf), llama.cpp (gguf) or ExLlamaV2",
        description="hf and exllamav2 write config.json with rope type longrope (in place, keeping "
        "config.json.pntk-backup, or into --out DIR with links to the model's other files); gguf writes a "
        "copy of --gguf FILE with llama.cpp's rope_freqs factors (to --out FILE, default FILE.pntk.gguf).",
    )
    parser.add_argument("--to", required=True, choices=TARGETS, help="the engine to export for")
    parser.add_argument("model", metavar="MODEL_DIR", help="model directory (or its config.json)")
    parser.add_argument("--out", metavar="PATH", help="hf/exllamav2: a directory for config.json; gguf: the new file")
    parser.add_argument("--gguf", metavar="FILE", help="gguf: the GGUF made by llama.cpp's converter")
    parser.set_defaults(handler=_export)
