"""`pntk inspect`, `pntk validate`, `pntk rope-table`: the RoPE plan of a model directory."""
from __future__ import annotations

import argparse
import json
import os
import tempfile

from ..rope import RopePlan

TABLE_DTYPES = ["bfloat16", "float16", "float32"]


def _add_plan_arguments(parser: argparse.ArgumentParser, path_required: bool = True) -> None:
    if path_required:
        parser.add_argument("path", metavar="PATH", help="model directory or config.json")
    else:
        parser.add_argument("path", metavar="PATH", nargs="?", help="model directory or config.json")
        parser.add_argument("--example", metavar="NAME", help="a built-in example instead of PATH (airophin)")
    parser.add_argument("--theta", type=float, help="replace rope_theta (ExLlama rope_freq_base)")
    parser.add_argument("--alpha-value", type=float, default=1.0, help="NTK alpha, applied before the method")
    parser.add_argument("--compress-pos-emb", type=float, default=1.0, help="divide positions after the method")
    parser.add_argument("--max-seq-len", type=int, help="table length (default: the extended length)")


def _plan(args: argparse.Namespace) -> RopePlan:
    path = args.path
    if getattr(args, "example", None):
        from ..examples import example_path

        if path:
            raise ValueError("<command line>: --example: give either PATH or --example, not both")
        try:
            path = example_path(args.example)
        except KeyError as exc:
            raise ValueError(f"<command line>: --example: {exc.args[0]}") from None
    if path is None:
        raise ValueError("<command line>: PATH: give a model directory, a config.json or --example NAME")
    return RopePlan.from_config(
        path,
        theta=args.theta,
        alpha_value=args.alpha_value,
        compress_pos_emb=args.compress_pos_emb,
        max_seq_len=args.max_seq_len,
    )


def plan_details(plan: RopePlan) -> dict:
    """Everything the plan decided, as plain JSON-able values."""
    inv_freq = plan.core.inv_freq(plan.max_seq_len).tolist()  # numpy: no torch import for inspect
    return {
        "source": plan.source,
        "method": plan.method,
        "method_note": plan.method_note,
        "factor": plan.factor,
        "attention_factor": plan.attention_factor,
        "original_max_position_embeddings": plan.original_max_position_embeddings,
        "extended_max_position_embeddings": plan.extended_max_position_embeddings,
        "max_seq_len": plan.max_seq_len,
        "rotary_dim": plan.rotary_dim,
        "theta": plan.theta,
        "base_after_alpha": plan.base,
        "alpha_value": plan.alpha_value,
        "compress_pos_emb": plan.compress_pos_emb,
        "correction_ranges": {name: [low, high] for name, low, high in plan.correction_ranges},
        "inv_freq": inv_freq,
    }


def _inspect(args: argparse.Namespace) -> int:
    plan = _plan(args)
    details = plan_details(plan)
    if args.json:
        print(json.dumps(details, indent=2))
        return 0
    print(plan.describe())
    width = max(len(key) for key in details)
    for key, value in details.items():
        if key == "inv_freq":
            head = ", ".join(f"{x:.9g}" for x in value[:3])
            tail = ", ".join(f"{x:.9g}" for x in value[-2:])
            value = f"[{head}, ..., {tail}] ({len(value)} fp32 values)"
        elif key == "correction_ranges":
            value = ", ".join(f"{name} ({low:g}, {high:g})" for name, (low, high) in value.items()) or "-"
        print(f"  {key:<{width}}  {value}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    plan = _plan(args)
    print(f"{plan.source}: valid ({plan.describe()})")
    return 0


def _rope_table(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    plan = _plan(args)
    dtype = getattr(torch, args.dtype)
    seq_len = plan.max_seq_len if args.seq_len is None else args.seq_len
    if seq_len <= 0:
        raise ValueError(f"<command line>: --seq-len: must be positive, got {seq_len}")
    cos, sin = plan.tables(seq_len, dtype=dtype)
    if dtype == torch.bfloat16:  # numpy has no bfloat16: store the bit patterns
        cos, sin = cos.view(torch.uint16), sin.view(torch.uint16)
    arrays = {
        "inv_freq": plan.inv_freq(seq_len).numpy(),
        "cos": cos.numpy(),
        "sin": sin.numpy(),
        "attention_factor": np.float64(plan.attention_factor),
        "factor": np.float64(plan.factor),
        "method": np.str_(plan.method),
        "dtype": np.str_(args.dtype),
    }
    out = os.path.abspath(args.out)
    directory = os.path.dirname(out)
    if not os.path.isdir(directory):
        raise ValueError(f"{args.out}: (path): the directory {directory} does not exist")
    # Written beside the target and renamed: readers never see a partial file.
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".pntk-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, out)
    except BaseException:
        os.unlink(temporary)
        raise
    print(plan.describe())
    print(f"wrote {args.out}: cos/sin [{seq_len}, {plan.rotary_dim}] {args.dtype}")
    return 0


def register(subparsers) -> None:
    inspect = subparsers.add_parser("inspect", help="print the RoPE plan of a model")
    _add_plan_arguments(inspect, path_required=False)
    inspect.add_argument("--json", action="store_true", help="print the plan as JSON")
    inspect.set_defaults(handler=_inspect)

    validate = subparsers.add_parser("validate", help="check a config.json; exit 2 if invalid")
    _add_plan_arguments(validate)
    validate.set_defaults(handler=_validate)

    table = subparsers.add_parser("rope-table", help="write inv_freq and cos/sin tables to an .npz")
    _add_plan_arguments(table)
    table.add_argument("--out", required=True, metavar="FILE.npz")
    table.add_argument("--seq-len", type=int, help="rows (default: the extended length)")
    table.add_argument("--dtype", choices=TABLE_DTYPES, default="float16")
    table.set_defaults(handler=_rope_table)
