"""pntk patch check|apply|revert on synthetic trees; consistency of the shipped patch sets.

Synthetic patch sets are made here with Python's difflib (not pntk's code) from random files, so
the tool is checked against an independent diff writer, and against `git apply`.
"""
import difflib
import hashlib
import json
import re
import subprocess

import pytest

from pntk import cli, patching
from pntk.integrations import exllama, webui

SHIPPED = patching.patches_root()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_source(rng, lines: int) -> bytes:
    words = ["alpha", "beta", "rope", "theta", "cache", "layer", "import", "return", "self", "x"]
    return "".join(
        " " * int(rng.integers(0, 3)) * 4 + " ".join(rng.choice(words, int(rng.integers(1, 6)))) + f" {i}\n"
        for i in range(lines)
    ).encode()


def edited(rng, data: bytes) -> bytes:
    """Insert, replace and delete a few random lines (kept apart so hunks stay separate)."""
    lines = data.decode().splitlines(keepends=True)
    for index in sorted(rng.choice(list(range(2, len(lines) - 2, 9)), 4, replace=False), reverse=True):
        kind = int(rng.integers(0, 3))
        if kind == 0:
            lines.insert(index, "import pntk  # added\n")
        elif kind == 1:
            lines[index] = "pntk.call()  # replaced\n"
        else:
            del lines[index]
    return "".join(lines).encode()


def unified(path: str, before: bytes, after: bytes) -> bytes:
    diff = difflib.unified_diff(
        before.decode().splitlines(keepends=True), after.decode().splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return "".join(diff).encode()


@pytest.fixture
def synthetic(tmp_path, rng):
    """A runner 'toy' with two files, a target tree at its pre-images, and the post-images."""
    root, target = tmp_path / "patches", tmp_path / "tree"
    (root / "toy").mkdir(parents=True)
    (target / "pkg").mkdir(parents=True)
    pre, post, files = {}, {}, []
    for path in ("main.py", "pkg/module.py"):
        pre[path] = random_source(rng, 60)
        post[path] = edited(rng, pre[path])
        (target / path).write_bytes(pre[path])
        patch_name = path.replace("/", "_") + ".patch"
        (root / "toy" / patch_name).write_bytes(unified(path, pre[path], post[path]))
        files.append({"path": path, "pre_sha256": sha(pre[path]), "post_sha256": sha(post[path]), "patch": patch_name})
    manifest = {"runner": "toy", "upstream": "someone/toy", "revision": "0123abc",
                "layouts": [{"name": "toy checkout", "files": files}]}
    (root / "toy" / "manifest.json").write_text(json.dumps(manifest))
    return root, target, pre, post


def tree_bytes(target, paths):
    return {path: (target / path).read_bytes() for path in paths}


def test_apply_check_revert_round_trip(synthetic):
    root, target, pre, post = synthetic
    assert patching.inspect_target("toy", target, root).summary == "not applied"
    _, written = patching.apply("toy", target, root)
    assert sorted(written) == sorted(pre)
    assert tree_bytes(target, pre) == post
    assert patching.inspect_target("toy", target, root).summary == "applied"
    _, written = patching.apply("toy", target, root)
    assert written == []
    patching.revert("toy", target, root)
    assert tree_bytes(target, pre) == pre


def test_cli_contract(synthetic, monkeypatch, capsys):
    root, target, pre, post = synthetic
    monkeypatch.setattr(patching, "patches_root", lambda: root)
    arguments = ["--runner", "toy", "--target", str(target)]
    assert cli.main(["patch", "apply", *arguments]) == 0
    assert "applied (" in capsys.readouterr().out
    assert cli.main(["patch", "apply", *arguments]) == 0
    assert "already applied" in capsys.readouterr().out
    assert cli.main(["patch", "check", *arguments]) == 0
    assert ": applied" in capsys.readouterr().out
    assert cli.main(["patch", "revert", *arguments]) == 0
    assert tree_bytes(target, pre) == pre
    assert cli.main(["patch", "revert", *arguments]) == 0
    assert "nothing to revert" in capsys.readouterr().out


def test_changed_file_is_refused_naming_file_and_revision(synthetic, monkeypatch, capsys):
    root, target, pre, _ = synthetic
    changed = pre["pkg/module.py"] + b"# a local edit\n"
    (target / "pkg/module.py").write_bytes(changed)
    monkeypatch.setattr(patching, "patches_root", lambda: root)
    assert cli.main(["patch", "apply", "--runner", "toy", "--target", str(target)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert re.match(r"pntk: error: .*pkg/module\.py: sha256: .*someone/toy@0123abc", error)
    assert (target / "main.py").read_bytes() == pre["main.py"]
    assert (target / "pkg/module.py").read_bytes() == changed


def test_missing_file_and_missing_target_are_refused(synthetic, tmp_path):
    root, target, _, _ = synthetic
    (target / "main.py").unlink()
    with pytest.raises(patching.PatchError, match=r"main\.py: \(path\): missing; expected someone/toy@0123abc"):
        patching.apply("toy", target, root)
    with pytest.raises(patching.PatchError, match=r"--target must be a directory"):
        patching.inspect_target("toy", tmp_path / "nowhere", root)


def test_a_patch_that_does_not_give_the_recorded_image_writes_nothing(synthetic):
    root, target, pre, _ = synthetic
    manifest_path = root / "toy" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["layouts"][0]["files"][1]["post_sha256"] = "0" * 64  # the second file's check fails
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(patching.PatchError, match=r"pkg_module\.py\.patch: sha256: applying does not give"):
        patching.apply("toy", target, root)
    assert tree_bytes(target, pre) == pre


def test_a_failed_write_rolls_back_the_files_already_replaced(synthetic, monkeypatch):
    root, target, pre, _ = synthetic
    real_replace, calls = patching.os.replace, []

    def failing_replace(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(destination))
        real_replace(source, destination)

    monkeypatch.setattr(patching.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        patching.apply("toy", target, root)
    assert tree_bytes(target, pre) == pre
    assert sorted(p.name for p in target.rglob(".*pntk-*")) == []  # no temporary files left


def test_partly_applied_tree_is_completed(synthetic):
    root, target, pre, post = synthetic
    (target / "main.py").write_bytes(post["main.py"])
    state = patching.inspect_target("toy", target, root)
    assert state.summary.startswith("partly applied")
    _, written = patching.apply("toy", target, root)
    assert written == ["pkg/module.py"]
    assert tree_bytes(target, pre) == post


def test_synthetic_patches_also_apply_with_git(synthetic):
    root, target, pre, post = synthetic
    for path in pre:
        patch = root / "toy" / (path.replace("/", "_") + ".patch")
        subprocess.run(["git", "apply", str(patch)], cwd=target, check=True)
    assert tree_bytes(target, pre) == post
    patching.revert("toy", target, root)
    assert tree_bytes(target, pre) == pre


def test_file_without_trailing_newline(tmp_path, rng):
    # difflib writes no "\\ No newline at end of file" marker: take this diff from git instead.
    before = random_source(rng, 30).rstrip(b"\n")
    after = before + b"\nimport pntk"
    (tmp_path / "before.py").write_bytes(before)
    (tmp_path / "after.py").write_bytes(after)
    diff = subprocess.run(["git", "diff", "--no-index", "before.py", "after.py"], cwd=tmp_path,
                          capture_output=True).stdout
    assert b"\\ No newline at end of file" in diff
    patch = patching.parse_patch(diff.replace(b"b/after.py", b"b/f.py"), "f.py.patch")
    assert patching.apply_hunks(before, patch, "f.py.patch") == after
    assert patching.apply_hunks(after, patch.reversed(), "f.py.patch") == before


@pytest.mark.parametrize(
    "manifest, message",
    [
        ({"runner": "other", "upstream": "u/r", "revision": "1", "layouts": []}, "runner: says 'other'"),
        ({"runner": "toy", "revision": "1", "layouts": []}, "upstream: missing"),
        ({"runner": "toy", "upstream": "u/r", "revision": "1",
          "layouts": [{"name": "x", "files": [{"path": "main.py", "pre_sha256": "z", "post_sha256": "z",
                                               "patch": "main.py.patch"}]}]}, "pre_sha256: not a sha256"),
        ({"runner": "toy", "upstream": "u/r", "revision": "1",
          "layouts": [{"name": "x", "files": [{"path": "main.py", "pre_sha256": "0" * 64, "post_sha256": "0" * 64,
                                               "patch": "absent.patch"}]}]}, "absent.patch: \\(path\\)"),
    ],
)
def test_bad_manifest_names_the_field(synthetic, manifest, message):
    root, target, _, _ = synthetic
    (root / "toy" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(patching.PatchError, match=message):
        patching.inspect_target("toy", target, root)


# -- the shipped patch sets -------------------------------------------------------------------


@pytest.mark.parametrize("runner", patching.available_runners())
def test_shipped_manifest_is_consistent(runner):
    manifest = patching.load_manifest(runner)
    assert manifest.runner == runner
    assert re.fullmatch(r"[0-9a-f]{40}", manifest.revision)
    referenced = {entry.patch_file.name for layout in manifest.layouts for entry in layout.files}
    on_disk = {p.name for p in (SHIPPED / runner).iterdir() if p.name != "manifest.json"}
    assert referenced == on_disk
    for layout in manifest.layouts:
        paths = [entry.path for entry in layout.files]
        assert len(paths) == len(set(paths))
        for entry in layout.files:
            assert entry.pre_sha256 != entry.post_sha256


@pytest.mark.parametrize("runner, module, alias", [("exllama", exllama, "_pntk"), ("text-generation-webui", webui, "_pntk_webui")])
def test_shipped_patches_are_small_and_call_existing_functions(runner, module, alias):
    for patch_file in (SHIPPED / runner).glob("*.patch"):
        lines = patch_file.read_text().splitlines()
        added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
        assert 0 < sum(bool(line.strip()) for line in added) <= 8, patch_file
        for name in re.findall(rf"\b{alias}\.(\w+)", "\n".join(added)):
            assert hasattr(module, name), f"{patch_file.name} calls {alias}.{name}, which pntk lacks"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["patch", "apply", "--runner", "exllama"], r"<command line>: pntk patch apply: .*--target"),
        (["patch", "check", "--runner", "nope", "--target", "."], r"nope/manifest\.json: \(path\): no patch set .*exllama"),
    ],
)
def test_cli_usage_errors_are_one_line(arguments, message, capsys):
    assert cli.main(arguments) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.match(rf"pntk: error: .*{message}", error)
