"""Round trip: `pntk inspect` on an exported directory reports the original plan; a method the
target cannot express is refused with one clear line and nothing is written."""
from __future__ import annotations

import json
import os
import pathlib

import pytest

from pntk.cli import main

from export_helpers import llama_config, random_static_config, write_model_dir

STATIC_METHODS = ["pntk", "linear", "ntk", "yarn", "llama3"]


def _inspect(capsys, path) -> dict:
    assert main(["inspect", "--json", str(path)]) == 0
    details = json.loads(capsys.readouterr().out)
    details.pop("source")
    return details


def _snapshot(directory) -> dict:
    """Every file under `directory` (relative path -> bytes)."""
    return {
        os.path.relpath(os.path.join(root, name), directory): pathlib.Path(root, name).read_bytes()
        for root, _, names in os.walk(directory)
        for name in names
    }


@pytest.mark.parametrize("method", STATIC_METHODS)
def test_export_then_inspect_gives_the_original_plan(tmp_path, rng, capsys, method):
    model = tmp_path / "model"
    write_model_dir(model, random_static_config(method, rng))
    original_text = (model / "config.json").read_text()
    before = _inspect(capsys, model)
    assert before["method"] == method

    assert main(["export", "--to", "hf", str(model)]) == 0
    out = capsys.readouterr().out
    assert "exported as longrope" in out
    written = json.loads((model / "config.json").read_text())
    assert written["rope_scaling"]["rope_type"] == "longrope"
    assert written["pntk_export"]["method"] == method
    assert (model / "config.json.pntk-backup").read_text() == original_text
    assert _inspect(capsys, model) == before

    # Exporting again changes nothing and keeps the first backup.
    exported_text = (model / "config.json").read_text()
    assert main(["export", "--to", "hf", str(model)]) == 0
    capsys.readouterr()
    assert (model / "config.json").read_text() == exported_text
    assert (model / "config.json.pntk-backup").read_text() == original_text


def test_export_to_another_directory_leaves_the_model_alone(tmp_path, rng, capsys):
    model, out = tmp_path / "model", tmp_path / "served"
    write_model_dir(model, random_static_config("pntk", rng))
    (model / "model.safetensors").write_bytes(rng.bytes(64))
    snapshot = _snapshot(model)
    before = _inspect(capsys, model)
    assert main(["export", "--to", "exllamav2", str(model), "--out", str(out)]) == 0
    assert "pntk.integrations.exllamav2" in capsys.readouterr().out
    assert _snapshot(model) == snapshot
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert not (out / "config.json").is_symlink()
    assert (out / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert _inspect(capsys, out) == before


REFUSED = {
    "dynamic": ({"max_position_embeddings": 4096, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
                "rope_scaling.type", "dynamic NTK cannot be exported"),
    "dynamic-v5": ({"max_position_embeddings": 4096,
                    "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}},
                   "rope_parameters.rope_type", "dynamic NTK cannot be exported"),
    "none": ({"max_position_embeddings": 4096}, "rope_scaling", "nothing to export"),
    "longrope": ({"max_position_embeddings": 8192, "original_max_position_embeddings": 4096,
                  "rope_scaling": {"type": "longrope", "long_factor": [2.0] * 32, "short_factor": [1.0] * 32}},
                 "rope_scaling.type", "already longrope"),
}


@pytest.mark.parametrize("target", ["hf", "exllamav2", "gguf"])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_inexpressible_method_is_refused_and_nothing_written(tmp_path, capsys, case, target):
    fields, field, message = REFUSED[case]
    model = tmp_path / "model"
    write_model_dir(model, llama_config(64, **fields))
    gguf_in = tmp_path / "model.gguf"
    gguf_in.write_bytes(b"GGUF")  # never opened: the plan is refused first
    snapshot = _snapshot(tmp_path)
    argv = ["export", "--to", target, str(model)] + (["--gguf", str(gguf_in)] if target == "gguf" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"pntk: error: {model / 'config.json'}: {field}: "), err[0]
    assert message in err[0]
    assert _snapshot(tmp_path) == snapshot
    assert sorted(os.listdir(model)) == ["config.json"]


def test_editing_an_exported_config_is_caught(tmp_path, rng, capsys):
    model = tmp_path / "model"
    write_model_dir(model, random_static_config("pntk", rng))
    assert main(["export", "--to", "hf", str(model)]) == 0
    capsys.readouterr()
    config = json.loads((model / "config.json").read_text())
    pair = int(rng.integers(0, len(config["rope_scaling"]["long_factor"])))
    config["rope_scaling"]["long_factor"][pair] *= 1.001
    (model / "config.json").write_text(json.dumps(config))
    assert main(["inspect", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pntk: error: {model / 'config.json'}: rope_scaling.long_factor[{pair}]: "), err


def test_gguf_needs_its_input(tmp_path, rng, capsys):
    model = tmp_path / "model"
    write_model_dir(model, random_static_config("pntk", rng))
    assert main(["export", "--to", "gguf", str(model)]) == 2
    assert capsys.readouterr().err.startswith("pntk: error: <command line>: --gguf: ")
