"""`pntk inspect`, `pntk validate`, `pntk rope-table`: output contracts and the npz layout."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import pntk
from pntk.examples import example_path


def run_cli(*args, env=None):
    result = subprocess.run([sys.executable, "-m", "pntk", *args], capture_output=True, text=True, timeout=120,
                            env=env)
    return result.returncode, result.stdout, result.stderr


def test_inspect_builtin_airophin_reports_factor_4():
    code, out, err = run_cli("inspect", "--example", "airophin")
    assert code == 0, err
    first = out.splitlines()[0]
    assert "scaling factor 4 (4096 -> 16384 positions)" in first
    assert re.search(r"scaling factor (\d+(\.\d+)?)", first).group(1) == "4"
    assert "beta (43, 48), gamma (25, 41)" in out


def test_inspect_json_matches_python_api():
    code, out, _ = run_cli("inspect", str(example_path("airophin")), "--json", "--alpha-value", "2")
    assert code == 0
    details = json.loads(out)
    plan = pntk.RopePlan.from_config(example_path("airophin"), alpha_value=2.0)
    assert details["method"] == "pntk" and details["alpha_value"] == 2.0
    assert np.array_equal(np.array(details["inv_freq"], dtype=np.float32), plan.inv_freq().numpy())


def test_validate_ok_exit_0():
    code, out, _ = run_cli("validate", str(example_path("airophin") / "config.json"))
    assert code == 0 and "valid" in out


def test_console_script_installed():
    script = shutil.which("pntk", path=os.path.dirname(sys.executable)) or shutil.which("pntk")
    assert script, "the `pntk` command is not installed"
    result = subprocess.run([script, "inspect", "--example", "airophin"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "scaling factor 4" in result.stdout


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_rope_table_npz_contract(tmp_path, dtype):
    out = tmp_path / "table.npz"
    code, stdout, err = run_cli("rope-table", str(example_path("airophin")), "--out", str(out),
                                "--seq-len", "3000", "--dtype", dtype)
    assert code == 0, err
    assert "scaling factor 4" in stdout
    with np.load(out, allow_pickle=False) as npz:
        assert set(npz.files) == {"inv_freq", "cos", "sin", "attention_factor", "method", "dtype", "factor"}
        plan = pntk.RopePlan.from_config(example_path("airophin"))
        assert npz["inv_freq"].dtype == np.float32
        assert np.array_equal(npz["inv_freq"], plan.inv_freq().numpy())
        assert npz["attention_factor"].dtype == np.float64 and npz["attention_factor"] == 1.0
        assert npz["factor"].dtype == np.float64 and npz["factor"] == 4.0
        assert str(npz["method"]) == "pntk" and str(npz["dtype"]) == dtype
        cos, sin = plan.tables(3000, dtype=getattr(torch, dtype))
        stored_dtype = np.uint16 if dtype == "bfloat16" else getattr(np, dtype)
        assert npz["cos"].dtype == stored_dtype and npz["cos"].shape == (3000, 128)
        expected_cos = cos.view(torch.uint16) if dtype == "bfloat16" else cos
        expected_sin = sin.view(torch.uint16) if dtype == "bfloat16" else sin
        assert np.array_equal(npz["cos"], expected_cos.numpy())
        assert np.array_equal(npz["sin"], expected_sin.numpy())


def test_rope_table_default_length_and_no_partial_file(tmp_path):
    out = tmp_path / "t.npz"
    code, _, err = run_cli("rope-table", str(example_path("airophin")), "--out", str(out))
    assert code == 0, err
    with np.load(out, allow_pickle=False) as npz:
        assert npz["cos"].shape == (16384, 128) and npz["cos"].dtype == np.float16
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]
    code, _, err = run_cli("rope-table", str(example_path("airophin")), "--out", str(tmp_path / "no" / "t.npz"))
    assert code == 2 and err.startswith("pntk: error: ")


def test_quiet_silences_only_the_announcement(tmp_path):
    env = dict(os.environ, PNTK_QUIET="1")
    code, out, _ = run_cli("inspect", "--example", "airophin", env=env)
    assert code == 0 and "scaling factor 4" in out  # inspect's own output is not the runner announcement
