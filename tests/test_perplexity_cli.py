"""`pntk perplexity`: output contract and errors (one stderr line, exit 2), on the shipped float model."""
import re

import pytest

from pntk.cli import main
from pntk.tiny_model import FLOAT_MODEL_DIR, corpus

TABLE_ROW = re.compile(r"^(\S+(?: \(config\.json\))?)(?: \*)?\s+((?:\d+\.\d\d\s*)+)$")  # '*': config's method


def table(out: str) -> dict:
    rows = {}
    header = None
    for line in out.splitlines():
        if line.startswith("context "):
            header = [int(c) for c in line.split()[1:]]
        elif header and TABLE_ROW.match(line):
            label, cells = TABLE_ROW.match(line).groups()
            rows[label] = dict(zip(header, map(float, cells.split())))
    return rows


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_float_model_with_rope_overrides(capsys):
    code, out, err = run(capsys, "perplexity", str(FLOAT_MODEL_DIR), "--contexts", "64,1024",
                         "--rope", "none,pntk", "--documents", "2")
    assert code == 0, err
    assert "protocol: truncated-document protocol" in out
    assert "pntk: RoPE pntk, scaling factor 4 (256 -> 1024 positions)" in out
    assert "float weights" in out
    rows = table(out)
    assert set(rows) == {"none", "pntk"}
    assert rows["pntk"][1024] < rows["pntk"][64]
    assert rows["none"][1024] > 1.5 * rows["pntk"][1024]


def test_gptq_model_in_bfloat16(capsys, tmp_path):
    from pntk.tiny_model.generator import make_tiny_model

    make_tiny_model(tmp_path / "gptq")
    code, out, err = run(capsys, "perplexity", str(tmp_path / "gptq"), "--contexts", "64,1024", "--rope", "none,pntk",
                         "--documents", "2", "--dtype", "bfloat16")
    assert code == 0, err
    assert "GPTQ 4-bit through pntk's q4 matmul" in out
    rows = table(out)
    assert rows["none"][1024] > 1.5 * rows["pntk"][1024]
    assert 1 < rows["pntk"][64] < 20


def test_config_scaling_text_file_sliding_and_plot(capsys, tmp_path, rng):
    text = tmp_path / "story.txt"
    text.write_text(corpus.document(rng, 700))
    plot = tmp_path / "ppl.png"
    code, out, err = run(capsys, "perplexity", str(FLOAT_MODEL_DIR), "--contexts", "128,512", "--text", str(text),
                         "--protocol", "sliding", "--plot", str(plot))
    assert code == 0, err
    assert "protocol: sliding-window protocol" in out
    assert f"text: {text}" in out
    rows = table(out)
    assert list(rows) == ["pntk (config.json)"]
    assert all(1 < p < 2048 for p in rows["pntk (config.json)"].values())
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--contexts", "64,x"], r"<command line>: --contexts: must be a comma-separated list of integers"),
        (["--contexts", "1"], r"<command line>: --contexts: each context must be at least 2 tokens"),
        (["--rope", "superhot"], r"<command line>: --rope: must be one of none, linear, ntk, pntk, yarn, dynamic"),
        (["--rope-factor", "2"], r"<command line>: --rope-factor: goes with --rope"),
        (["--rope", "linear", "--rope-factor", "0.5"], r"<command line>: --rope-factor: must be at least 1"),
        (["--documents", "0"], r"<command line>: --documents: must be positive"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    code, out, err = run(capsys, "perplexity", str(FLOAT_MODEL_DIR), *argv)
    assert code == 2
    assert re.fullmatch(r"pntk: error: " + message + r".*\n", err)


def test_bad_paths_are_one_line_errors(capsys, tmp_path):
    code, _, err = run(capsys, "perplexity", str(tmp_path / "absent"))
    assert code == 2 and re.fullmatch(rf"pntk: error: {tmp_path / 'absent'}: \(path\): not a model directory\n", err)

    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    code, _, err = run(capsys, "perplexity", str(tmp_path))
    assert code == 2 and err == f'pntk: error: {tmp_path / "config.json"}: model_type: must be "llama", got \'gpt2\'\n'

    short = tmp_path / "short.txt"
    short.write_text("bamo tike .")
    code, _, err = run(capsys, "perplexity", str(FLOAT_MODEL_DIR), "--contexts", "64", "--text", str(short))
    assert code == 2
    assert re.fullmatch(rf"pntk: error: {short}: --contexts: the text has \d+ tokens, fewer than .*\n", err)

    code, _, err = run(capsys, "perplexity", str(FLOAT_MODEL_DIR), "--text", str(tmp_path / "none.txt"))
    assert code == 2 and err == f"pntk: error: {tmp_path / 'none.txt'}: (path): not found\n"
