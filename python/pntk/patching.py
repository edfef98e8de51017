"""Patch sets for runners: check, apply and revert pinned unified diffs, all-or-nothing.

Each runner has a directory patches/<runner>/ with a manifest.json:

    {"runner": "exllama", "upstream": "turboderp/exllama", "revision": "<sha or tag>",
     "layouts": [{"name": "source checkout ...",
                  "files": [{"path": "model.py", "pre_sha256": "...", "post_sha256": "...",
                             "patch": "model.py.patch"}]}]}

Paths are relative to the target directory; a patch is a one-file unified diff with a/ b/
prefixes (it also applies with `git apply` or `patch -p1`). A layout matches a target when every
file is byte for byte its pre-image or its post-image; anything else is refused, naming the
file and the expected upstream revision, and the tree is left untouched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Optional

PRE, POST, OTHER, MISSING = "unpatched", "patched", "changed", "missing"


class PatchError(ValueError):
    """A refused check/apply/revert: the message reads `<file>: <field>: <message>`."""


def patches_root() -> Path:
    """patches/ shipped in the wheel (pntk/patches), else the source tree's patches/."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "patches", package.parent.parent / "patches"):
        if candidate.is_dir():
            return candidate
    raise PatchError(f"{package / 'patches'}: (path): no patches directory in this installation")


def available_runners(root: Optional[Path] = None) -> list[str]:
    root = root or patches_root()
    return sorted(p.parent.name for p in root.glob("*/manifest.json"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


# -- unified diffs ----------------------------------------------------------------------------

_HUNK_HEADER = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclasses.dataclass
class Hunk:
    old_start: int  # 1-based line number in the pre-image
    old_lines: list[bytes]  # context and removed lines, newline included
    new_lines: list[bytes]  # context and added lines


@dataclasses.dataclass
class FilePatch:
    path: str  # the b/ path, relative to the target
    hunks: list[Hunk]

    def reversed(self) -> "FilePatch":
        hunks, shift = [], 0
        for hunk in self.hunks:  # the new image's line numbers, from the sizes of earlier hunks
            hunks.append(Hunk(hunk.old_start + shift, hunk.new_lines, hunk.old_lines))
            shift += len(hunk.new_lines) - len(hunk.old_lines)
        return FilePatch(self.path, hunks)


def parse_patch(text: bytes, source: str) -> FilePatch:
    """Parse a one-file unified diff (git or diff -u output); `source` names it in errors."""
    lines = text.splitlines(keepends=True)
    path, hunks, index = None, [], 0
    while index < len(lines):
        line = lines[index]
        if line.startswith(b"+++ "):
            name = line[4:].split(b"\t")[0].strip().decode()
            if not name.startswith("b/"):
                raise PatchError(f"{source}: +++: expected a b/ path, got {name!r}")
            if path is not None:
                raise PatchError(f"{source}: +++: one file per patch, found a second ({name})")
            path = name[2:]
            index += 1
            continue
        match = _HUNK_HEADER.match(line)
        if not match:
            index += 1
            continue
        if path is None:
            raise PatchError(f"{source}: @@: hunk before the +++ header")
        old_count = int(match.group(2) or 1)
        new_count = int(match.group(4) or 1)
        old, new, previous_tag = [], [], b" "
        index += 1
        while index < len(lines) and (
            len(old) < old_count or len(new) < new_count or lines[index].startswith(b"\\")
        ):
            body = lines[index]
            index += 1
            tag, content = body[:1], body[1:]
            if tag == b"\\":  # "\ No newline at end of file": the previous line has no newline
                images = {b"+": [new], b"-": [old]}.get(previous_tag, [old, new])
                for image in images:
                    image[-1] = image[-1].rstrip(b"\n")
                continue
            if body in (b"\n", b"\r\n"):  # an empty context line whose space was stripped
                tag, content = b" ", body
            if tag == b" ":
                old.append(content)
                new.append(content)
            elif tag == b"-":
                old.append(content)
            elif tag == b"+":
                new.append(content)
            else:
                raise PatchError(f"{source}: line {index}: unexpected line in a hunk: {body[:40]!r}")
            previous_tag = tag
        if len(old) != old_count or len(new) != new_count:
            raise PatchError(f"{source}: @@ -{int(match.group(1))}: hunk is truncated")
        hunks.append(Hunk(int(match.group(1)), old, new))
    if path is None or not hunks:
        raise PatchError(f"{source}: (patch): not a unified diff with a b/ path and hunks")
    return FilePatch(path, hunks)


def apply_hunks(data: bytes, patch: FilePatch, source: str) -> bytes:
    """Apply hunks exactly where they say (no fuzz: the pre-image is pinned by its sha256)."""
    lines = data.splitlines(keepends=True)
    out, cursor = [], 0
    for hunk in patch.hunks:
        start = hunk.old_start - 1 if hunk.old_lines else hunk.old_start
        if lines[start : start + len(hunk.old_lines)] != hunk.old_lines or start < cursor:
            raise PatchError(f"{source}: @@ -{hunk.old_start}: context does not match {patch.path}")
        out.extend(lines[cursor:start])
        out.extend(hunk.new_lines)
        cursor = start + len(hunk.old_lines)
    out.extend(lines[cursor:])
    return b"".join(out)


# -- manifests --------------------------------------------------------------------------------


@dataclasses.dataclass
class PatchedFile:
    path: str
    pre_sha256: str
    post_sha256: str
    patch: FilePatch
    patch_file: Path


@dataclasses.dataclass
class Layout:
    name: str
    files: list[PatchedFile]


@dataclasses.dataclass
class Manifest:
    runner: str
    upstream: str
    revision: str
    layouts: list[Layout]
    source: Path

    @property
    def pin(self) -> str:
        return f"{self.upstream}@{self.revision}"


def _field(data: dict, key: str, source: str, kind=str):
    value = data.get(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise PatchError(f"{source}: {key}: missing or not a {kind.__name__}")
    return value


def load_manifest(runner: str, root: Optional[Path] = None) -> Manifest:
    root = root or patches_root()
    directory = root / runner
    source = directory / "manifest.json"
    if not source.is_file():
        known = ", ".join(available_runners(root)) or "none"
        raise PatchError(f"{source}: (path): no patch set for runner {runner!r} (available: {known})")
    try:
        data = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise PatchError(f"{source}: (json): {exc}") from None
    if not isinstance(data, dict):
        raise PatchError(f"{source}: (json): must be an object")
    if _field(data, "runner", str(source)) != runner:
        raise PatchError(f"{source}: runner: says {data['runner']!r}, but the directory is {runner!r}")
    layouts = []
    for number, layout in enumerate(_field(data, "layouts", str(source), list)):
        where = f"{source}: layouts[{number}]"
        files = []
        for entry in _field(layout, "files", where, list):
            path = _field(entry, "path", where)
            patch_file = directory / _field(entry, "patch", where)
            if not patch_file.is_file():
                raise PatchError(f"{patch_file}: (path): named by {source} but missing")
            patch = parse_patch(patch_file.read_bytes(), str(patch_file))
            if patch.path != path:
                raise PatchError(f"{patch_file}: +++: patches {patch.path}, but the manifest says {path}")
            for key in ("pre_sha256", "post_sha256"):
                if not re.fullmatch(r"[0-9a-f]{64}", _field(entry, key, f"{where} {path}")):
                    raise PatchError(f"{where}: {key}: not a sha256 hex digest ({path})")
            files.append(PatchedFile(path, entry["pre_sha256"], entry["post_sha256"], patch, patch_file))
        layouts.append(Layout(_field(layout, "name", where), files))
    return Manifest(runner, _field(data, "upstream", str(source)), _field(data, "revision", str(source)), layouts, source)


# -- check / apply / revert -------------------------------------------------------------------


@dataclasses.dataclass
class TargetState:
    target: Path
    manifest: Manifest
    layout: Layout
    states: dict[str, str]  # path -> PRE or POST

    @property
    def summary(self) -> str:
        values = set(self.states.values())
        if values == {POST}:
            return "applied"
        if values == {PRE}:
            return "not applied"
        return "partly applied (" + ", ".join(p for p, s in self.states.items() if s == POST) + " patched)"


def _file_state(target: Path, entry: PatchedFile) -> str:
    path = target / entry.path
    if not path.is_file():
        return MISSING
    digest = sha256_file(path)
    return PRE if digest == entry.pre_sha256 else POST if digest == entry.post_sha256 else OTHER


def inspect_target(runner: str, target, root: Optional[Path] = None) -> TargetState:
    """Find the layout whose pre- or post-images all match the target, or refuse."""
    manifest = load_manifest(runner, root)
    target = Path(target)
    if not target.is_dir():
        raise PatchError(f"{target}: (path): --target must be a directory")
    best = None
    for layout in manifest.layouts:
        states = {entry.path: _file_state(target, entry) for entry in layout.files}
        if all(state in (PRE, POST) for state in states.values()):
            return TargetState(target, manifest, layout, states)
        matched = sum(state in (PRE, POST) for state in states.values())
        present = sum(state != MISSING for state in states.values())
        if best is None or (present, matched) > best[0]:
            best = ((present, matched), layout, states)
    _, layout, states = best
    path, state = next((p, s) for p, s in states.items() if s not in (PRE, POST))
    if state == MISSING:
        raise PatchError(
            f"{target / path}: (path): missing; expected {manifest.pin} ({layout.name}) in {target}"
        )
    raise PatchError(
        f"{target / path}: sha256: neither the {manifest.pin} file nor its pntk-patched version "
        f"({layout.name}); this patch set supports only that revision; the tree was left untouched"
    )


def _write_atomically(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.pntk-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _transform(state: TargetState, forward: bool) -> list[str]:
    """Compute every new file in memory, then replace them; on failure restore the originals."""
    want_from, want_to = (PRE, POST) if forward else (POST, PRE)
    planned = []
    for entry in state.layout.files:
        if state.states[entry.path] != want_from:
            continue
        path = state.target / entry.path
        original = path.read_bytes()
        patch = entry.patch if forward else entry.patch.reversed()
        result = apply_hunks(original, patch, str(entry.patch_file))
        expected = entry.post_sha256 if forward else entry.pre_sha256
        if sha256_bytes(result) != expected:
            raise PatchError(
                f"{entry.patch_file}: sha256: {'applying' if forward else 'reverting'} does not give the "
                f"{want_to} image recorded in {state.manifest.source}; the tree was left untouched"
            )
        planned.append((path, original, result))
    done = []
    try:
        for path, original, result in planned:
            _write_atomically(path, result)
            done.append((path, original))
    except BaseException:
        for path, original in reversed(done):
            _write_atomically(path, original)
        raise
    return [str(path.relative_to(state.target)) for path, _, _ in planned]


def apply(runner: str, target, root: Optional[Path] = None) -> tuple[TargetState, list[str]]:
    """Patch every file still in its pre-image; returns (state before, files written)."""
    state = inspect_target(runner, target, root)
    return state, _transform(state, forward=True)


def revert(runner: str, target, root: Optional[Path] = None) -> tuple[TargetState, list[str]]:
    """Restore every patched file to its pre-image, byte for byte."""
    state = inspect_target(runner, target, root)
    return state, _transform(state, forward=False)
