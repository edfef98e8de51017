"""pntk.integrations.webui and pntk.launch, against stand-ins with text-generation-webui 1.6.1's
module interface (tests/standins/webui) and ExLlama's (tests/standins/exllama_model.py), with a
tiny random Llama saved by Transformers.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from pntk.examples import example_path
from pntk.integrations import exllama, webui
from pntk.integrations import transformers as pntk_tf

STANDINS = Path(__file__).parent / "standins"
AIROPHIN = Path(example_path("airophin"))
TINY_PNTK = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, vocab_size=97, max_position_embeddings=256,
                 original_max_position_embeddings=64, tie_word_embeddings=False)
WEBUI_ARGS = dict(rope_freq_base=0, alpha_value=1.0, compress_pos_emb=1, max_seq_len=2048)


@pytest.fixture
def models_dir(tmp_path, seed):
    """models/tiny: a random Llama whose config.json needs pntk scaling (64 -> 256 positions)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**TINY_PNTK)).save_pretrained(tmp_path / "models" / "tiny")
    assert json.loads((tmp_path / "models/tiny/config.json").read_text())["original_max_position_embeddings"] == 64
    return tmp_path / "models"


def run_launch(arguments, cwd):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    environment.pop("PNTK_QUIET", None)
    return subprocess.run([sys.executable, "-m", "pntk.launch", *arguments], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_launch_hooks_webui_loaders_settings_and_menu(models_dir):
    result = run_launch(["server.py", "tiny", "Transformers", str(models_dir)], STANDINS / "webui")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "('max_seq_len', 256)" in out and "('truncation_length', 256)" in out
    assert f"truncation_length_max: {webui.MAX_SEQ_LEN}" in out
    assert f"max_seq_len slider maximum: {webui.MAX_SEQ_LEN}" in out
    assert re.search(r"^pntk: RoPE pntk, scaling factor 4 \(64 -> 256 positions\)", out, re.M)
    assert re.search(r"^menu: Successfully loaded `tiny`\. \|  \| RoPE: pntk, scaling factor 4 ", out, re.M)
    assert "rotary: PntkRotaryEmbedding" in out


def test_launch_hooks_an_exllama_checkout(tmp_path):
    shutil.copy(STANDINS / "exllama_model.py", tmp_path / "model.py")
    (tmp_path / "model_init.py").write_text(  # stand-in: ExLlama's script helpers, -l defaults to 2048
        "def add_args(parser):\n"
        "    parser.add_argument('-c', '--config')\n"
        "    parser.add_argument('-l', '--length', type=int, default=2048)\n"
        "def get_model_files(args):\n"
        "    pass\n"
    )
    (tmp_path / "example.py").write_text(
        "import argparse, sys\nimport model, model_init\nfrom pntk.integrations import exllama\n"
        "print('status:', exllama.status(model))\n"
        "print('max_seq_len:', model.ExLlamaConfig(sys.argv[2]).max_seq_len)\n"
        "parser = argparse.ArgumentParser()\nmodel_init.add_args(parser)\nargs = parser.parse_args(sys.argv[1:])\n"
        "model_init.get_model_files(args)\nprint('length:', args.length)\n"
    )
    result = run_launch(["example.py", "-c", str(AIROPHIN / "config.json")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"status: {exllama.HOOKED}" in result.stdout and "max_seq_len: 16384" in result.stdout
    assert "length: 16384" in result.stdout


def test_launch_refuses_a_missing_script(tmp_path):
    result = run_launch(["absent.py"], tmp_path)
    assert (result.returncode, result.stderr) == (2, "pntk: error: absent.py: (path): no such script\n")


@pytest.fixture
def webui_modules(monkeypatch, models_dir):
    monkeypatch.syspath_prepend(str(STANDINS / "webui"))
    for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
        monkeypatch.delitem(sys.modules, name)
    import modules.shared as shared

    monkeypatch.setattr(shared.args, "model_dir", str(models_dir))
    monkeypatch.setattr(shared, "user_config", {})
    return shared


def test_model_settings_default_to_the_extended_length_unless_the_user_set_them(webui_modules):
    assert webui.model_settings("tiny", {"truncation_length": 2048}) == {"max_seq_len": 256, "truncation_length": 256}
    webui_modules.user_config = {"tin.*": {"truncation_length": 100}}
    assert webui.model_settings("tiny", {"truncation_length": 100}) == {"max_seq_len": 256, "truncation_length": 100}
    assert webui.model_settings("absent", {"truncation_length": 7}) == {"truncation_length": 7}


def test_broken_config_is_reported_and_the_loader_runs_without_pntk(webui_modules, models_dir, capsys):
    config = models_dir / "tiny" / "config.json"
    values = json.loads(config.read_text())
    del values["rope_parameters"]  # Transformers 5 writes it, and the plan would read it first
    config.write_text(json.dumps(dict(values, rope_scaling={"type": "warp", "factor": 2})))
    model = object()
    assert webui.after_load(model, models_dir / "tiny", "Transformers", types.SimpleNamespace(**WEBUI_ARGS)) is model
    assert re.fullmatch(r"pntk: warning: .*tiny/config\.json: rope_scaling.*: .*\(the Transformers loader runs without pntk\)\n",
                        capsys.readouterr().err)
    assert webui.menu_note() == ""


def test_exllamav2_gets_the_plan_and_a_warning_for_a_method_it_lacks(models_dir, capsys):
    webui.after_load(object(), models_dir / "tiny", "ExLlamav2_HF", types.SimpleNamespace(**WEBUI_ARGS))
    captured = capsys.readouterr()
    assert re.search(r"^pntk: RoPE pntk, scaling factor 4 .*\[ExLlamaV2\]$", captured.out, re.M)
    assert "this model needs RoPE pntk, which ExLlamaV2 lacks" in captured.err
    assert "scaling factor 4" in webui.menu_note()


def test_webui_overrides_reach_the_plan(models_dir, seed):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(models_dir / "tiny")
    args = types.SimpleNamespace(**dict(WEBUI_ARGS, rope_freq_base=500000, alpha_value=2.0, compress_pos_emb=2))
    webui.after_load(model, models_dir / "tiny", "Transformers", args)
    plan = model.model.rotary_emb.plan
    assert (plan.theta, plan.alpha_value, plan.compress_pos_emb) == (500000, 1.0, 2.0)  # rope_freq_base wins over alpha


def test_autogptq_model_gets_tables_and_its_exllama_input_length_raised(models_dir, monkeypatch):
    """AutoGPTQ itself needs accelerate/peft/CUDA here: a stand-in wrapper with its attributes and a
    module of its exllama backend's name; exllama_set_max_input_length is recorded."""
    from transformers import LlamaForCausalLM

    calls = []
    auto_gptq = types.ModuleType("auto_gptq")
    auto_gptq.exllama_set_max_input_length = lambda model, length: calls.append((model, length)) or model
    monkeypatch.setitem(sys.modules, "auto_gptq", auto_gptq)
    exllama_linear = type("QuantLinear", (torch.nn.Module,), {"__module__": "auto_gptq.nn_modules.qlinear.qlinear_exllama"})
    wrapper = torch.nn.Module()
    wrapper.model = LlamaForCausalLM.from_pretrained(models_dir / "tiny")
    wrapper.model.model.layers[0].mlp.down_proj = exllama_linear()
    wrapper.quantize_config = types.SimpleNamespace(desc_act=False)  # no act-order buffer to raise
    assert webui.after_load(wrapper, models_dir / "tiny", "AutoGPTQ", types.SimpleNamespace(**WEBUI_ARGS)) is wrapper
    assert isinstance(wrapper.model.model.rotary_emb, pntk_tf.PntkRotaryEmbedding)
    assert calls == []
    wrapper.quantize_config.desc_act = True
    webui.after_load(wrapper, models_dir / "tiny", "AutoGPTQ", types.SimpleNamespace(**WEBUI_ARGS))
    assert calls == [(wrapper, 256)]


def test_unpatched_exllama_gets_the_runtime_hook(capsys):
    spec = importlib.util.spec_from_file_location("standin_exllama_for_webui", STANDINS / "exllama_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        webui.use_exllama(module.ExLlama)
        assert exllama.status(module) == exllama.HOOKED
        assert "not patched on disk; pntk runtime hook installed" in capsys.readouterr().err
    finally:
        del sys.modules[spec.name]


@pytest.mark.parametrize("loader", ["ExLlama", "ExLlama_HF"])
def test_exllama_loaders_show_the_plan_of_the_loaded_config(loader, tmp_path):
    spec = importlib.util.spec_from_file_location("standin_exllama_menu", STANDINS / "exllama_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    exllama.install(module)
    config = module.ExLlamaConfig(AIROPHIN / "config.json")
    config.compress_pos_emb = 2.0
    if loader == "ExLlama":  # ExllamaModel.from_pretrained returns (model, model), .config is ExLlama's
        output = (types.SimpleNamespace(config=config),) * 2
    else:  # ExllamaHF: .config is a Transformers PretrainedConfig, ExLlama's is .ex_config
        output = types.SimpleNamespace(config=object(), ex_config=config)
    assert webui.after_load(output, tmp_path, loader, types.SimpleNamespace(**WEBUI_ARGS)) is output
    assert re.fullmatch(r"\n\nRoPE: pntk, scaling factor 4 \(4096 -> 16384 positions\).*compress_pos_emb=2.*",
                        webui.menu_note())


def test_accepting_rope_scaling_is_a_no_op_on_transformers_5():
    from transformers import LlamaConfig

    with pntk_tf.accepting_rope_scaling():
        config = LlamaConfig(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
    assert config.rope_parameters["rope_type"] == "yarn"
