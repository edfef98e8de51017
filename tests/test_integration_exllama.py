"""pntk.integrations.exllama: the code the ExLlama patches and runtime hook run.

Runs against (1) tests/standins/exllama_model.py, a CPU stand-in with ExLlama v1's interface
(no GPU here), and (2) the real model.py of PyPI's `exllama` 0.1.0 (an older ExLlama than the
pinned 3b013cd: its ExLlamaConfig runs for real, its CUDA extension is replaced by a stub; the
patch tool must refuse that file as a different upstream version).
"""
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import pntk
from pntk import RopePlan, cli
from pntk.examples import example_path
from exllama_cpu import import_pypi_exllama, load_on_cpu, write_tiny_gptq_model
from pntk.integrations import exllama

STANDIN = Path(__file__).parent / "standins" / "exllama_model.py"
AIROPHIN = Path(example_path("airophin")) / "config.json"
REPORT = re.compile(r"^pntk: RoPE (\w+), scaling factor (\d+(\.\d+)?) .*\[ExLlama (\S+)\]$", re.M)
# ExLlama rounds fp32 sin/cos of fp32 angles to fp16; pntk rounds double values once: at positions
# below 4096 the angles differ by < 4096 * 2^-24 rad, well under one fp16 ulp (2^-11) near 1.
FP16_TABLE_TOLERANCE = 2**-10


@pytest.fixture
def standin(monkeypatch):
    """A fresh stand-in module (the hook changes its classes), hooked by pntk."""
    spec = importlib.util.spec_from_file_location("standin_exllama_model", STANDIN)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    monkeypatch.delenv("PNTK_QUIET", raising=False)
    monkeypatch.delenv(exllama.Q4_SWITCH, raising=False)
    return module


def write_config(tmp_path, **fields):
    values = dict(hidden_size=256, num_attention_heads=4, num_hidden_layers=3, rope_theta=10000.0,
                  max_position_embeddings=4096, model_type="llama")
    values.update(fields)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    return path


def test_unpatched_module_is_reported_as_such(standin, capsys):
    assert exllama.report(standin) == exllama.UNPATCHED
    error = capsys.readouterr().err
    assert str(STANDIN) in error and "NOT patched" in error and "pntk patch apply --runner exllama" in error


def test_hooked_exllama_uses_pntk_tables_and_reports_once_per_device(standin, tmp_path, capsys):
    exllama.install(standin)
    assert exllama.report(standin) == exllama.HOOKED
    capsys.readouterr()
    standin.ExLlamaConfig(AIROPHIN)
    config = standin.ExLlamaConfig(AIROPHIN)
    assert config.max_seq_len == 16384  # the extended length, not ExLlama's 2048
    config.max_seq_len = 4096
    config.device_map.layers = ["cpu", "meta", "cpu"]
    model = standin.ExLlama(config)
    out = capsys.readouterr().out
    assert out.count(f"pntk: exllama {STANDIN}: {exllama.HOOKED}\n") == 1  # which model.py, once
    reports = REPORT.findall(out)
    assert [(method, factor, device) for method, factor, _, device in reports] == [
        ("pntk", "4", "cpu"), ("pntk", "4", "meta")]
    cos, sin = RopePlan.from_config(AIROPHIN).tables(4096, dtype=torch.float16)
    for index, layer in enumerate(model.layers):
        assert layer.self_attn.sin.shape == (1, 1, 4096, 128)
        if config.device_map.layers[index] == "cpu":
            assert torch.equal(layer.self_attn.sin[0, 0], sin) and torch.equal(layer.self_attn.cos[0, 0], cos)


def test_runner_overrides_combine_as_exllama_defines_them(standin, tmp_path, rng, capsys):
    """No scaling in config.json: pntk's tables must equal ExLlama's own, overrides included."""
    exllama.install(standin)
    path = write_config(tmp_path)
    alpha = float(rng.uniform(1.5, 4.0))
    compress = float(rng.choice([2.0, 4.0]))
    config = standin.ExLlamaConfig(path)
    config.max_seq_len, config.alpha_value, config.compress_pos_emb = 4096, alpha, compress
    config.calculate_rotary_embedding_base()
    expected = standin.ExLlamaConfig.__new__(standin.ExLlamaConfig)
    vars(expected).update(vars(config))
    expected.rotary_embedding_base = 10000.0 * alpha ** (64 / 62)
    assert config.rotary_embedding_base == pytest.approx(expected.rotary_embedding_base, rel=1e-12)
    model = standin.ExLlama(config)
    report = capsys.readouterr().out
    assert float(re.search(r"alpha_value=(\S+)", report).group(1)) == pytest.approx(alpha, rel=1e-5)
    assert float(re.search(r"compress_pos_emb=(\S+)", report).group(1)) == compress
    reference_sin, reference_cos = standin.exllama_tables(expected, "cpu")
    for table, reference in ((model.sincos["cpu"][0], reference_sin), (model.sincos["cpu"][1], reference_cos)):
        difference = (table.float() - reference.float()).abs().max()
        assert torch.isfinite(table).all() and difference <= FP16_TABLE_TOLERANCE


def test_explicit_base_replaces_the_config_theta(standin, tmp_path):
    exllama.install(standin)
    config = standin.ExLlamaConfig(write_config(tmp_path))
    config.rotary_embedding_base = 1e6  # what webui's rope_freq_base and ExLlama's -theta do
    plan = exllama.plan_for(config)
    assert plan.theta == 1e6 and plan.base == 1e6
    assert plan.inv_freq()[1].item() == pytest.approx(1e6 ** (-2 / 64), rel=1e-6)


def test_position_past_the_tables_is_refused(standin, tmp_path, capsys):
    exllama.install(standin)
    config = standin.ExLlamaConfig(AIROPHIN)
    config.max_seq_len = 64
    model = standin.ExLlama(config)
    cache = standin.ExLlamaCache(model)
    rows = model._forward(torch.ones(1, 60, dtype=torch.long), cache)
    assert rows[0][0].shape[0] == 60
    with pytest.raises(ValueError, match=r"config\.json: max_seq_len: positions up to 67 requested, .* hold 64"):
        model._forward(torch.ones(1, 8, dtype=torch.long), cache)


def test_config_made_before_install_is_refused(standin, tmp_path):
    config = standin.ExLlamaConfig(AIROPHIN)
    exllama.install(standin)
    with pytest.raises(ValueError, match="ExLlamaConfig: pntk: .*unpatched ExLlamaConfig"):
        standin.ExLlama(config)


def test_bad_config_names_file_and_field(standin, tmp_path):
    exllama.install(standin)
    path = write_config(tmp_path, rope_scaling={"type": "yarn", "factor": "four"})
    with pytest.raises(pntk.ConfigError, match=r"config\.json: .*factor"):
        standin.ExLlamaConfig(path)


def test_default_length_for_exllama_scripts(tmp_path):
    args = types.SimpleNamespace(length=None, config=str(AIROPHIN))
    exllama.default_length(args)
    assert args.length == 16384
    args = types.SimpleNamespace(length=3000, config=str(AIROPHIN))
    exllama.default_length(args)
    assert args.length == 3000


# -- the real model.py of PyPI's exllama 0.1.0 -------------------------------------------------


@pytest.fixture
def pypi_exllama(monkeypatch):
    return import_pypi_exllama(monkeypatch)


def test_pypi_exllama_config_runs_hooked(pypi_exllama, capsys):
    exllama.install(pypi_exllama)
    assert exllama.status(pypi_exllama) == exllama.HOOKED
    config = pypi_exllama.ExLlamaConfig(str(AIROPHIN))
    assert (config.max_seq_len, config.original_max_position_embeddings) == (16384, 4096)
    config.alpha_value = 2.0
    config.calculate_rotary_embedding_base()
    plan = exllama.plan_for(config)
    assert plan.method == "pntk" and plan.alpha_value == 2.0
    assert config.rotary_embedding_base == plan.base == pytest.approx(10000 * 2 ** (128 / 126), rel=1e-12)


def test_pypi_exllama_loads_with_pntk_tables_and_refuses_positions_past_them(pypi_exllama, tmp_path, generator,
                                                                            capsys):
    exllama.install(pypi_exllama)
    directory = write_tiny_gptq_model(tmp_path / "tiny", generator)
    model = load_on_cpu(pypi_exllama, directory, max_seq_len=96)
    reports = REPORT.findall(capsys.readouterr().out)
    assert [(method, factor, device) for method, factor, _, device in reports] == [("pntk", "4", "cpu")]
    cos, sin = RopePlan.from_config(directory).tables(96, dtype=torch.float16)
    assert torch.equal(model.sincos["cpu"][0][0, 0], sin) and torch.equal(model.sincos["cpu"][1][0, 0], cos)
    for layer in model.layers:
        assert torch.equal(layer.self_attn.sin[0, 0], sin) and torch.equal(layer.self_attn.cos[0, 0], cos)
    cache = pypi_exllama.ExLlamaCache(model)
    with pytest.raises(ValueError, match=r"positions up to 99 requested, but the RoPE tables hold 96"):
        model.forward(torch.randint(0, 64, (1, 100), generator=generator), cache)
    with pytest.raises(RuntimeError, match="stub of ExLlama's CUDA extension has no kernels"):  # past the check
        model.forward(torch.randint(0, 64, (1, 96), generator=generator), cache)


def test_patch_tool_refuses_pypi_exllama_as_another_version(pypi_exllama, capsys):
    target = Path(pypi_exllama.__file__).parent
    assert cli.main(["patch", "check", "--runner", "exllama", "--target", str(target)]) == 2
    error = capsys.readouterr().err
    assert re.fullmatch(
        rf"pntk: error: {re.escape(str(target / 'model.py'))}: sha256: neither the turboderp/exllama@3b013cd\w* file .*\n",
        error,
    )
