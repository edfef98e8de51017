"""`pntk demo` end to end on the CPU: builds the GPTQ model, reports the plan, generates, and
prints the perplexity table in which pntk beats no scaling at 4x the original length."""
import re

from pntk.cli import main

from test_perplexity_cli import table

# The margin the demo's note states for the shipped model (measured: see the README, "The two commands").
MIN_RATIO_AT_4X = 1.5


def test_demo_end_to_end(tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert main(["demo", "--model-dir", str(model_dir), "--documents", "3"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "building it: quantizing" in out
    assert (model_dir / "quantize_config.json").is_file()
    report = [line for line in out.splitlines() if line.startswith("pntk: RoPE ")]
    assert len(report) == 1 and re.search(r"scaling factor (\d+(\.\d+)?)", report[0]).group(1) == "4"
    assert "14 projections run pntk's 4-bit matmul" in out
    generated = re.search(r"^(\d+) of (\d+) generated nouns belong to the document's topic", out, re.M)
    assert generated and int(generated.group(2)) > 0
    assert int(generated.group(1)) > int(generated.group(2)) // 2
    rows = table(out)
    assert list(rows) == ["none", "linear", "ntk", "pntk", "yarn"]
    assert list(rows["pntk"]) == [32, 64, 128, 256, 512, 1024]
    assert rows["none"][1024] > MIN_RATIO_AT_4X * rows["pntk"][1024]
    assert rows["pntk"][1024] < rows["pntk"][256] < rows["pntk"][32]
    ratio = float(re.search(r"no scaling [\d.]+, ([\d.]+)x lower perplexity", out).group(1))
    assert ratio > MIN_RATIO_AT_4X

    # A second run reuses the model.
    assert main(["demo", "--model-dir", str(model_dir), "--documents", "1"]) == 0
    assert "already built" in capsys.readouterr().out
