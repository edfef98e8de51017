"""ExLlamaV2: the runtime hook answers get_rope_params from pntk's plan (no attention scaling
for pntk, exported or not), and the patch manifest follows the patch tool's format."""
from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from pntk import RopePlan
from pntk.export import export_hf
from pntk.integrations import exllamav2 as hook

from export_helpers import random_static_config, write_model_dir

PATCHES = Path(__file__).resolve().parents[1] / "patches" / "exllamav2"


def _exllamav2_config(model_dir, plan: RopePlan, **settings):
    """The ExLlamaV2Config fields the hook reads, as ExLlamaV2 fills them from config.json."""
    fields = dict(model_dir=str(model_dir), rotary_embedding_base=plan.theta, scale_alpha_value=1.0,
                  scale_pos_emb=1.0, max_seq_len=plan.extended_max_position_embeddings)
    fields.update(settings)
    return types.SimpleNamespace(**fields)


@pytest.mark.parametrize("exported", [False, True])
def test_pntk_model_gets_pntk_frequencies_without_attention_scaling(tmp_path, rng, capsys, exported):
    model = write_model_dir(tmp_path / "model", random_static_config("pntk", rng))
    plan = RopePlan.from_config(model)
    if exported:
        export_hf(model)
        capsys.readouterr()
    cfg = _exllamav2_config(model, plan)
    inv_freq, attention = hook.rope_params("cpu", cfg, cfg.rotary_embedding_base)
    assert torch.equal(inv_freq, plan.inv_freq())
    assert attention == 1.0
    line = capsys.readouterr().out.strip()
    assert re.search(r"scaling factor (\d+(\.\d+)?)", line).group(1) == f"{plan.factor:g}"
    assert line.endswith("[exllamav2 cpu]")


def test_runner_settings_become_overrides(tmp_path, rng, capsys):
    model = write_model_dir(tmp_path / "model", random_static_config("pntk", rng))
    plan = RopePlan.from_config(model)
    alpha = float(np.round(rng.uniform(1.5, 4), 2))
    cfg = _exllamav2_config(model, plan, scale_alpha_value=alpha, max_seq_len=plan.original_max_position_embeddings)
    inv_freq, _ = hook.rope_params("cpu", cfg, cfg.rotary_embedding_base)
    expected = RopePlan.from_config(model, alpha_value=alpha, max_seq_len=cfg.max_seq_len, static_tables=True)
    assert torch.equal(inv_freq, expected.inv_freq())
    assert not torch.equal(inv_freq, plan.inv_freq())
    assert f"alpha_value={alpha:g}" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["linear", "yarn", "llama3"])
def test_methods_exllamav2_builds_itself_are_left_to_it(tmp_path, rng, method):
    model = write_model_dir(tmp_path / "model", random_static_config(method, rng))
    cfg = _exllamav2_config(model, RopePlan.from_config(model))
    assert hook.rope_params("cpu", cfg, cfg.rotary_embedding_base) is None
    export_hf(model)  # exported, ExLlamaV2 would read longrope and scale attention: the hook takes over
    inv_freq, attention = hook.rope_params("cpu", cfg, cfg.rotary_embedding_base)
    plan = RopePlan.from_config(model)
    assert torch.equal(inv_freq, plan.inv_freq()) and attention == plan.attention_factor


def test_second_base_is_left_to_exllamav2(tmp_path, rng):
    model = write_model_dir(tmp_path / "model", random_static_config("pntk", rng))
    cfg = _exllamav2_config(model, RopePlan.from_config(model))
    assert hook.rope_params("cpu", cfg, cfg.rotary_embedding_base * 2) is None


def test_install_wraps_get_rope_params_once(tmp_path, rng, monkeypatch, capsys):
    calls = []
    rope = types.ModuleType("exllamav2.rope")
    rope.get_rope_params = lambda device, cfg, base: calls.append(base) or ("upstream", 1.5)
    package = types.ModuleType("exllamav2")
    package.rope = rope
    monkeypatch.setitem(sys.modules, "exllamav2", package)
    monkeypatch.setitem(sys.modules, "exllamav2.rope", rope)
    hook.install()
    wrapped = rope.get_rope_params
    hook.install()
    assert rope.get_rope_params is wrapped

    model = write_model_dir(tmp_path / "model", random_static_config("pntk", rng))
    cfg = _exllamav2_config(model, RopePlan.from_config(model))
    inv_freq, attention = rope.get_rope_params("cpu", cfg, cfg.rotary_embedding_base)
    assert attention == 1.0 and isinstance(inv_freq, torch.Tensor) and calls == []
    assert rope.get_rope_params("cpu", cfg, 1234.5) == ("upstream", 1.5)
    assert calls == [1234.5]


def test_manifest_pins_a_revision_and_its_patch_calls_the_hook():
    manifest = json.loads((PATCHES / "manifest.json").read_text())
    assert manifest["runner"] == "exllamav2"
    assert manifest["upstream"] == hook.UPSTREAM
    assert manifest["revision"] == hook.REVISION and re.fullmatch(r"[0-9a-f]{40}", manifest["revision"])
    files = [entry for layout in manifest["layouts"] for entry in layout["files"]]
    assert files
    for entry in files:
        assert re.fullmatch(r"[0-9a-f]{64}", entry["pre_sha256"])
        assert re.fullmatch(r"[0-9a-f]{64}", entry["post_sha256"])
        assert entry["pre_sha256"] != entry["post_sha256"]
        diff = (PATCHES / entry["patch"]).read_text().splitlines()
        assert diff[0] == f"--- a/{entry['path']}" and diff[1] == f"+++ b/{entry['path']}"
        added = [line[1:] for line in diff[2:] if line.startswith("+")]
        removed = [line for line in diff[2:] if line.startswith("-")]
        assert len(added) + len(removed) <= 8, "the patch must stay a few lines that call into pntk"
        assert any("from pntk.integrations.exllamav2 import rope_params" in line for line in added)
