"""The pntk command line. Errors are one stderr line, `pntk: error: <file>: <field>: <message>`,
with exit code 2; a traceback is a bug.

Each module of pntk.commands adds its subcommands through a `register(subparsers)` function;
a command handler returns the exit code.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import Optional, Sequence

EXIT_INVALID = 2


class CommandLineError(Exception):
    """Bad command-line usage: reported as `pntk: error: <command line>: <argument>: <message>`."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse would print usage too)
        raise CommandLineError(f"<command line>: {self.prog}: {message}")


def report_error(message: str) -> int:
    print(f"pntk: error: {message}", file=sys.stderr)
    return EXIT_INVALID


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="pntk", description="RoPE scaling and 4-bit GPTQ kit for Llama runners.")
    parser.add_argument("--version", action="version", version=f"pntk {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    from . import commands

    for module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{module.name}").register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ._core import ConfigError

    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)
    except CommandLineError as exc:
        return report_error(str(exc))
    except ConfigError as exc:
        return report_error(str(exc))
    except BrokenPipeError:  # `pntk inspect ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as exc:
        return report_error(_describe_exception(exc))
    except KeyboardInterrupt:
        return 130


def _describe_exception(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: (path): {exc.strerror or exc}"
    return str(exc)
