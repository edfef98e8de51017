"""Whole-file writes: a reader sees the old file or the new one, never a partial one."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def replaced_atomically(path: str) -> Iterator[str]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds,
    delete it when the block fails."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".pntk-", suffix=".tmp")
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _mode_for(path: str) -> int:
    """The mode `path` has, or the one a plain open() would give it (mkstemp makes 0600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text(path: str, text: str) -> None:
    with replaced_atomically(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
