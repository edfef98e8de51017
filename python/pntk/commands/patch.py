"""`pntk patch check|apply|revert --runner R --target DIR`: the pinned runner patches (see pntk.patching)."""
from __future__ import annotations

import argparse

from .. import patching


def _header(state: patching.TargetState) -> str:
    return f"{state.target}: {state.manifest.runner} {state.manifest.pin}, {state.layout.name}"


def _check(args: argparse.Namespace) -> int:
    state = patching.inspect_target(args.runner, args.target)
    print(f"{_header(state)}: {state.summary}")
    for path, file_state in state.states.items():
        print(f"  {path}: {file_state}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    state, written = patching.apply(args.runner, args.target)
    if not written:
        print(f"{_header(state)}: already applied")
        return 0
    print(f"{_header(state)}: applied ({', '.join(written)})")
    return 0


def _revert(args: argparse.Namespace) -> int:
    state, written = patching.revert(args.runner, args.target)
    if not written:
        print(f"{_header(state)}: not applied, nothing to revert")
        return 0
    print(f"{_header(state)}: reverted ({', '.join(written)})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("patch", help="check, apply or revert a runner's pntk patches")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    for name, handler, text in (
        ("check", _check, "say whether the target is the pinned upstream version, patched or not"),
        ("apply", _apply, "patch the target (all files or none); a second apply is a no-op"),
        ("revert", _revert, "restore the upstream files byte for byte"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--runner", required=True, help="a directory of patches/ with a manifest.json "
                            "(exllama, text-generation-webui, ...)")
        action.add_argument("--target", required=True, metavar="DIR",
                            help="ExLlama: the directory holding model.py; the webui: its root")
        action.set_defaults(handler=handler)
