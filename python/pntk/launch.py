"""Run a runner's script with pntk hooked in, editing no files:

    python -m pntk.launch server.py --model airophin-13b-pntk-16k-GPTQ --loader ExLlama_HF
    python -m pntk.launch example_basic.py        (in an ExLlama checkout)

Right after Python imports one of the runner modules pntk knows (text-generation-webui's
modules.*, exllama's model / exllama.model / model_init), the same functions that the patch
files call are wrapped around it (pntk.integrations.webui / .exllama runtime_hooks()). The
script then runs as `python SCRIPT ARGS...` would run it.
"""
from __future__ import annotations

import importlib.abc
import os
import runpy
import sys
from typing import Callable, Optional, Sequence

from .cli import report_error


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader, hook: Callable):
        self.loader, self.hook = loader, hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.hook(module)


class PostImportHooks(importlib.abc.MetaPathFinder):
    """A meta path finder that runs hooks[name](module) once the module `name` has executed."""

    def __init__(self, hooks: dict):
        self.hooks = hooks

    def find_spec(self, name, path, target=None):
        hook = self.hooks.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader, hook)
                return spec
        return None


def install_hooks() -> PostImportHooks:
    """Put the ExLlama and webui runtime hooks on sys.meta_path (and on modules already imported)."""
    from .integrations import exllama, webui

    hooks = {**exllama.runtime_hooks(), **webui.runtime_hooks()}
    for name, hook in hooks.items():
        if name in sys.modules:
            hook(sys.modules[name])
    finder = PostImportHooks(hooks)
    sys.meta_path.insert(0, finder)
    return finder


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        return report_error("<command line>: SCRIPT: usage: python -m pntk.launch SCRIPT.py [ARGS...]")
    script = argv[0]
    if not os.path.isfile(script):
        return report_error(f"{script}: (path): no such script")
    install_hooks()
    sys.argv = argv
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
