"""ExLlamaV2: the hook gives prepare_sincos pntk's own tables (no attention scaling for pntk,
exported or not), and the patch manifest follows the patch tool's format."""
from __future__ import annotations

import enum
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
                  scale_pos_emb=1.0, pos_id_index=0, max_seq_len=plan.extended_max_position_embeddings)
    fields.update(settings)
    return types.SimpleNamespace(**fields)


def _tables(cfg, base=None, neox=True):
    return hook.rope_tables("cpu", cfg, cfg.rotary_embedding_base if base is None else base, neox)


@pytest.mark.parametrize("exported", [False, True])
def test_pntk_model_gets_pntk_tables_without_attention_scaling(tmp_path, rng, capsys, exported):
    model = write_model_dir(tmp_path / "model", random_static_config("pntk", rng))
    plan = RopePlan.from_config(model)
    if exported:
        export_hf(model)
        capsys.readouterr()
    cfg = _exllamav2_config(model, plan, max_seq_len=int(rng.integers(64, 4096)))
    sin, cos = _tables(cfg)
    expected_cos, expected_sin = plan.tables(cfg.max_seq_len, dtype=torch.float16)
    assert sin.shape == cos.shape == (1, 1, cfg.max_seq_len, plan.rotary_dim)
    assert sin.dtype == cos.dtype == torch.float16
    assert torch.equal(cos[0, 0], expected_cos) and torch.equal(sin[0, 0], expected_sin)
    assert torch.all(cos[0, 0, 0] == 1.0)  # position 0: cos = attention factor = 1 (no scaling)
    line = capsys.readouterr().out.strip()
    assert re.search(r"scaling factor (\d+(\.\d+)?)", line).group(1) == f"{plan.factor:g}"
    assert line.endswith("[exllamav2 cpu]")


def test_runner_settings_become_overrides(tmp_path, rng, capsys):
    model = write_model_dir(tmp_path / "model", random_static_config("pntk", rng))
    plan = RopePlan.from_config(model)
    alpha = float(np.round(rng.uniform(1.5, 4), 2))
    compress = float(rng.choice([2.0, 4.0]))
    cfg = _exllamav2_config(model, plan, scale_alpha_value=alpha, scale_pos_emb=compress, max_seq_len=512)
    sin, cos = _tables(cfg)
    expected = RopePlan.from_config(model, alpha_value=alpha, compress_pos_emb=compress, max_seq_len=512,
                                    static_tables=True)
    expected_cos, expected_sin = expected.tables(512, dtype=torch.float16)
    assert torch.equal(cos[0, 0], expected_cos) and torch.equal(sin[0, 0], expected_sin)
    assert not torch.equal(cos[0, 0], plan.tables(512, dtype=torch.float16)[0])
    out = capsys.readouterr().out
    assert f"alpha_value={alpha:g}" in out and f"compress_pos_emb={compress:g}" in out


@pytest.mark.parametrize("method", ["linear", "yarn", "llama3"])
def test_methods_exllamav2_builds_itself_are_left_to_it(tmp_path, rng, method):
    model = write_model_dir(tmp_path / "model", random_static_config(method, rng))
    cfg = _exllamav2_config(model, RopePlan.from_config(model), max_seq_len=256)
    assert _tables(cfg) is None
    export_hf(model)  # exported, ExLlamaV2 would read longrope and scale attention: the hook takes over
    plan = RopePlan.from_config(model)
    sin, cos = _tables(cfg)
    assert torch.equal(cos[0, 0], plan.tables(256, dtype=torch.float16)[0])


def test_second_base_is_left_to_exllamav2_and_other_layouts_refused(tmp_path, rng):
    model = write_model_dir(tmp_path / "model", random_static_config("pntk", rng))
    cfg = _exllamav2_config(model, RopePlan.from_config(model), max_seq_len=64)
    assert _tables(cfg, base=cfg.rotary_embedding_base * 2) is None
    with pytest.raises(ValueError, match=r"config\.json: \(exllamav2\): pntk's tables are NeoX-style"):
        _tables(cfg, neox=False)


def _fake_exllamav2(monkeypatch):
    """exllamav2.architecture and exllamav2.device as far as install() uses them."""
    class RopeStyle(enum.IntEnum):
        NONE = 0
        GPTJ = 1
        NEOX = 2

    class ExLlamaV2DeviceContext:
        def prepare_sincos(self):  # upstream: one (sin, cos) per base; here a marker
            self.sin, self.cos = ["upstream sin"], ["upstream cos"]

    architecture = types.ModuleType("exllamav2.architecture")
    architecture.RopeStyle = RopeStyle
    device = types.ModuleType("exllamav2.device")
    device.ExLlamaV2DeviceContext = ExLlamaV2DeviceContext
    device._torch_device = lambda index: "cpu" if index == -1 else f"cuda:{index}"
    for name, module in {"exllamav2": types.ModuleType("exllamav2"), "exllamav2.architecture": architecture,
                         "exllamav2.device": device}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return ExLlamaV2DeviceContext, RopeStyle


def test_install_replaces_the_model_tables_once(tmp_path, rng, monkeypatch, capsys):
    context_class, rope_style = _fake_exllamav2(monkeypatch)
    hook.install()
    wrapped = context_class.prepare_sincos
    hook.install()
    assert context_class.prepare_sincos is wrapped

    def context(method):
        model = write_model_dir(tmp_path / method, random_static_config(method, rng))
        ctx = context_class()
        ctx.device_idx = -1
        ctx.archparams = types.SimpleNamespace(rope_style=rope_style.NEOX)
        plan = RopePlan.from_config(model)
        ctx.model = types.SimpleNamespace(config=_exllamav2_config(model, plan, max_seq_len=128))
        ctx.prepare_sincos()
        return ctx, plan

    ctx, plan = context("pntk")
    assert torch.equal(ctx.cos[0][0, 0], plan.tables(128, dtype=torch.float16)[0])
    assert "[exllamav2 cpu]" in capsys.readouterr().out
    ctx, _ = context("llama3")
    assert ctx.cos == ["upstream cos"] and ctx.sin == ["upstream sin"]


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
        assert not removed and len(added) <= 8, "the patch must stay a few lines that call into pntk"
        assert any("from pntk.integrations.exllamav2 import rope_tables" in line for line in added)
