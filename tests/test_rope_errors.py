"""Invalid input: one stderr line `pntk: error: <file>: <field>: <message>`, exit code 2, through the
CLI and as pntk.ConfigError through the Python API; a fuzz run never crashes the C++ parser."""
import copy
import json
import random
import re
import subprocess
import sys

import pytest

import pntk
from rope_configs import airophin_config, llama_config

ERROR_LINE = re.compile(r"^pntk: error: (?P<file>[^:]+): (?P<field>[^:]+): (?P<message>.+)$")

# (name, config document or raw text, field named in the error)
INVALID_CONFIGS = [
    ("missing max_position_embeddings", {"hidden_size": 4096, "num_attention_heads": 32}, "max_position_embeddings"),
    ("missing hidden_size", {"num_attention_heads": 32, "max_position_embeddings": 4096}, "hidden_size"),
    ("string hidden_size", llama_config(hidden_size="4096"), "hidden_size"),
    ("boolean heads", llama_config(num_attention_heads=True), "num_attention_heads"),
    ("zero heads", {"hidden_size": 4096, "num_attention_heads": 0, "max_position_embeddings": 4096}, "num_attention_heads"),
    ("negative max", llama_config(max_positions=-5), "max_position_embeddings"),
    ("fractional max", llama_config(max_positions=4096.5), "max_position_embeddings"),
    ("odd rotary dim", llama_config(head_dim=127), "head_dim"),
    ("odd partial rotary dim", llama_config(head_dim=128, partial_rotary_factor=51 / 128), "partial_rotary_factor"),
    ("partial factor > 1", llama_config(partial_rotary_factor=1.5), "partial_rotary_factor"),
    ("zero theta", llama_config(rope_theta=0), "rope_theta"),
    ("factor below 1", llama_config(rope_scaling={"type": "linear", "factor": 0.5}), "rope_scaling.factor"),
    ("string factor", llama_config(rope_scaling={"type": "linear", "factor": "4"}), "rope_scaling.factor"),
    ("missing factor", llama_config(rope_scaling={"type": "linear"}), "rope_scaling.factor"),
    ("unknown type", llama_config(rope_scaling={"type": "superhot", "factor": 2}), "rope_scaling.type"),
    ("unknown rope_type", llama_config(rope_parameters={"rope_type": "ntkk", "factor": 2}), "rope_parameters.rope_type"),
    ("type disagrees", llama_config(rope_scaling={"type": "linear", "rope_type": "yarn", "factor": 2}), "rope_scaling.type"),
    ("scaling not an object", llama_config(rope_scaling=[1, 2]), "rope_scaling"),
    ("original zero", airophin_config(original=0), "original_max_position_embeddings"),
    ("original negative", airophin_config(original=-4096), "original_max_position_embeddings"),
    ("original above max", airophin_config(original=32768), "original_max_position_embeddings"),
    ("pntk original == max",
     llama_config(max_positions=4096, rope_scaling={"type": "pntk", "original_max_position_embeddings": 4096}),
     "rope_scaling.original_max_position_embeddings"),
    ("pntk without original", llama_config(rope_scaling={"type": "pntk"}), "rope_scaling.original_max_position_embeddings"),
    ("llama3 without bands", llama_config(rope_scaling={"type": "llama3", "factor": 8, "original_max_position_embeddings": 8192}),
     "rope_scaling.low_freq_factor"),
    ("truncate not bool", llama_config(rope_scaling={"type": "yarn", "factor": 4, "truncate": "yes"}), "rope_scaling.truncate"),
    ("top level not an object", [1, 2, 3], "(top level)"),
    ("rope_scaling disagrees with rope_parameters",
     llama_config(rope_parameters={"rope_type": "linear", "factor": 2.0}, rope_scaling={"type": "linear", "factor": 4.0}),
     "rope_scaling"),
]

SYNTAX_ERRORS = [
    ("truncated", '{"hidden_size": 4096,\n  "num_attention_heads": ', "line 2, column"),
    ("trailing comma", '{"hidden_size": 4096,}', "line 1, column"),
    ("not json", "hidden_size = 4096", "line 1, column 1"),
    ("empty", "", "line 1, column 1"),
    ("number overflow", '{"hidden_size": 16E384, "num_attention_heads": 1, "max_position_embeddings": 1}', "(json)"),
]


def run_cli(*args):
    result = subprocess.run([sys.executable, "-m", "pntk", *args], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


def write(tmp_path, content) -> str:
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def assert_one_error_line(stderr: str, file: str, field_start: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    match = ERROR_LINE.match(lines[0])
    assert match, lines[0]
    assert match["file"] == file
    assert match["field"].startswith(field_start), lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name,config,field", INVALID_CONFIGS, ids=[c[0] for c in INVALID_CONFIGS])
def test_invalid_config_python_api(tmp_path, name, config, field):
    source = config if isinstance(config, dict) else write(tmp_path, config)
    with pytest.raises(pntk.ConfigError) as raised:
        pntk.RopePlan.from_config(source)
    assert isinstance(raised.value, ValueError)
    label = "<dict>" if isinstance(config, dict) else source
    assert str(raised.value).startswith(f"{label}: {field}: "), str(raised.value)


@pytest.mark.parametrize("command", ["validate", "inspect", "rope-table"])
@pytest.mark.parametrize("name,config,field", INVALID_CONFIGS[::3], ids=[c[0] for c in INVALID_CONFIGS[::3]])
def test_invalid_config_cli(tmp_path, command, name, config, field):
    path = write(tmp_path, config)
    extra = ["--out", str(tmp_path / "t.npz")] if command == "rope-table" else []
    code, stdout, stderr = run_cli(command, path, *extra)
    assert code == 2
    assert_one_error_line(stderr, path, field)
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize("name,text,field", SYNTAX_ERRORS, ids=[c[0] for c in SYNTAX_ERRORS])
def test_json_syntax_errors_name_line_and_column(tmp_path, name, text, field):
    path = write(tmp_path, text)
    code, _, stderr = run_cli("validate", path)
    assert code == 2
    assert_one_error_line(stderr, path, field)
    with pytest.raises(pntk.ConfigError, match=re.escape(f"{path}: {field}")):
        pntk.RopePlan.from_config(path)


def test_missing_path_and_directory_without_config(tmp_path):
    missing = str(tmp_path / "nope")
    code, _, stderr = run_cli("inspect", missing)
    assert code == 2
    assert_one_error_line(stderr, missing, "(path)")
    code, _, stderr = run_cli("validate", str(tmp_path))
    assert code == 2
    assert_one_error_line(stderr, str(tmp_path / "config.json"), "(path)")
    with pytest.raises(pntk.ConfigError, match="no such file"):
        pntk.RopePlan.from_config(missing)


@pytest.mark.parametrize("flag,value,field", [
    ("--alpha-value", "0", "alpha_value"),
    ("--compress-pos-emb", "-1", "compress_pos_emb"),
    ("--theta", "-5", "theta"),
    ("--max-seq-len", "0", "max_seq_len"),
])
def test_invalid_overrides(tmp_path, flag, value, field):
    path = write(tmp_path, airophin_config())
    code, _, stderr = run_cli("inspect", path, flag, value)
    assert code == 2
    assert_one_error_line(stderr, "<runner overrides>", field)


def test_bad_command_line_is_one_line_exit_2(tmp_path):
    code, _, stderr = run_cli("inspect", "--alpha-value", "abc", str(tmp_path))
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and stderr.startswith("pntk: error: ")


def test_dict_that_is_not_json():
    with pytest.raises(pntk.ConfigError, match="<dict>"):
        pntk.RopePlan.from_config(llama_config(rope_theta=float("nan")))


# ---- fuzz: mutations of valid configs never crash the parser -------------------------------------

VALID_SEEDS = [
    airophin_config(),
    llama_config(rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
                               "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.5}),
    llama_config(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                                  "rope_theta": 500000.0}),
    llama_config(rope_scaling={"type": "dynamic", "factor": 2.0}, partial_rotary_factor=0.5),
    llama_config(rope_scaling={"type": "longrope", "long_factor": [1.5] * 64, "short_factor": [1.0] * 64,
                               "original_max_position_embeddings": 4096}, max_positions=16384),
]
ODD_VALUES = [None, True, False, 0, -1, 1, 2, 3.5, -0.0, 1e308, -1e308, 2**63, 2**64 + 1, -(2**63), 1e-320,
              "", "4096", "linear", "pntk", [], [1], {}, {"type": "yarn"}, [None], "\u00e9\u0000"]


def mutate(rng: random.Random, document):
    document = copy.deepcopy(document)
    objects = [document]
    if isinstance(document.get("rope_scaling"), dict):
        objects.append(document["rope_scaling"])
    if isinstance(document.get("rope_parameters"), dict):
        objects.append(document["rope_parameters"])
    for _ in range(rng.randint(1, 4)):
        target = rng.choice(objects)
        keys = list(target) + ["type", "rope_type", "factor", "head_dim", "original_max_position_embeddings"]
        key = rng.choice(keys)
        action = rng.random()
        if action < 0.2:
            target.pop(key, None)
        else:
            target[key] = rng.choice(ODD_VALUES)
    return document


def mutate_text(rng: random.Random, text: str) -> str:
    position = rng.randrange(len(text) + 1)
    choice = rng.random()
    if choice < 0.4:
        return text[:position] + text[position + rng.randint(1, 8):]
    if choice < 0.8:
        return text[:position] + rng.choice('{}[]:,"0123456789.eE-+ \\/ntfu') + text[position:]
    return text[:position]


def test_fuzz_mutated_configs_never_crash(seed):
    rng = random.Random(seed)
    outcomes = {"plan": 0, "error": 0}
    for case in range(4000):
        base = rng.choice(VALID_SEEDS)
        if case % 2:
            text = mutate_text(rng, json.dumps(base))
            source = pntk._core.plan_from_json
            try:
                plan = source(text, "<fuzz>")
                plan.inv_freq()
                plan.describe()
                outcomes["plan"] += 1
            except pntk.ConfigError as error:
                assert str(error).startswith("<fuzz>: ")
                outcomes["error"] += 1
        else:
            document = mutate(rng, base)
            try:
                plan = pntk.RopePlan.from_config(document)
                inv = plan.inv_freq()
                assert inv.numel() == plan.rotary_dim // 2
                outcomes["plan"] += 1
            except pntk.ConfigError as error:
                assert str(error).startswith("<dict>: ")
                outcomes["error"] += 1
    assert outcomes["plan"] > 100 and outcomes["error"] > 100, outcomes
