"""`pntk export --to gguf`: a GGUF made with the gguf package for a tiny Llama is copied with
llama.cpp's rope_freqs factors and rope keys; anything that is not a GGUF is refused."""
from __future__ import annotations

import os

import gguf
import numpy as np
import pytest

from pntk import RopePlan, _core
from pntk.cli import main

from export_helpers import llama_config, write_model_dir

HEAD_DIM, HEADS, ORIGINAL, FACTOR, VOCAB = 64, 2, 256, 4, 96
ARCH = "llama"


def _airophin_like(tmp_path) -> str:
    return write_model_dir(
        tmp_path / "model",
        llama_config(HEAD_DIM, HEADS, original_max_position_embeddings=ORIGINAL,
                     max_position_embeddings=ORIGINAL * FACTOR, rope_theta=10000.0, vocab_size=VOCAB),
    )


def _write_gguf(path, rng, *, arch=ARCH, rope_dim=HEAD_DIM, rope_freqs=None, yarn=False) -> dict:
    """What llama.cpp's converter writes for a tiny Llama (a few tensors); returns the tensors."""
    hidden = HEAD_DIM * HEADS
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(ORIGINAL * FACTOR)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_head_count(HEADS)
    writer.add_rope_dimension_count(rope_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_token_list([f"tok{i}" for i in range(VOCAB)])
    if yarn:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(4.0)
        writer.add_rope_scaling_yarn_ext_factor(1.0)
    tensors = {
        "token_embd.weight": rng.standard_normal((VOCAB, hidden)).astype(np.float16),
        "blk.0.attn_q.weight": rng.standard_normal((hidden, hidden)).astype(np.float32),
        "output_norm.weight": rng.uniform(0.5, 1.5, hidden).astype(np.float32),
    }
    if rope_freqs is not None:
        tensors["rope_freqs.weight"] = rope_freqs
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    # A block-quantized tensor: the copy must keep its raw bytes and type.
    quantized = gguf.quants.quantize(rng.standard_normal((hidden, 2 * hidden)).astype(np.float32),
                                     gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.ffn_down.weight", quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    tensors["blk.0.ffn_down.weight"] = quantized
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def _value(reader, key):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def test_gguf_reads_back_with_factors_and_keys(tmp_path, rng, capsys):
    model = _airophin_like(tmp_path)
    source, out = tmp_path / "tiny.gguf", tmp_path / "tiny.pntk.gguf"
    tensors = _write_gguf(source, rng, yarn=True)
    before = source.read_bytes()

    assert main(["export", "--to", "gguf", model, "--gguf", str(source), "--out", str(out)]) == 0
    assert "added rope_freqs [32]" in capsys.readouterr().out
    assert source.read_bytes() == before, "the input GGUF was modified"

    plan = RopePlan.from_config(model)
    reader = gguf.GGUFReader(str(out))
    rope_freqs = [t for t in reader.tensors if t.name == "rope_freqs.weight"]
    assert len(rope_freqs) == 1
    assert rope_freqs[0].tensor_type == gguf.GGMLQuantizationType.F32
    factors = np.asarray(rope_freqs[0].data, dtype=np.float32)
    np.testing.assert_array_equal(factors, _core.frequency_factors(plan.core))
    assert factors[0] == 1.0 and factors[-1] == FACTOR  # base pairs kept, the last pair linear
    # llama.cpp divides each angle pos * base^(-2i/d) by rope_freqs[i]: in fp64 that is pntk's inv_freq.
    pairs = np.arange(HEAD_DIM // 2)
    llama_cpp = 10000.0 ** (-2.0 * pairs / HEAD_DIM) / factors.astype(np.float64)
    np.testing.assert_allclose(llama_cpp, plan.inv_freq().numpy(), rtol=1e-6)

    expected_keys = {
        f"{ARCH}.context_length": ORIGINAL * FACTOR,
        f"{ARCH}.rope.dimension_count": HEAD_DIM,
        f"{ARCH}.rope.freq_base": 10000.0,
        f"{ARCH}.rope.scaling.type": "none",
        f"{ARCH}.rope.scaling.factor": 1.0,
        f"{ARCH}.rope.scaling.attn_factor": 1.0,
        f"{ARCH}.rope.scaling.original_context_length": ORIGINAL,
    }
    for key, value in expected_keys.items():
        assert _value(reader, key) == value, key
    assert _value(reader, f"{ARCH}.rope.scaling.yarn_ext_factor") is None
    assert _value(reader, "pntk.export.plan") == plan.describe()
    assert _value(reader, "general.architecture") == ARCH
    assert _value(reader, "tokenizer.ggml.tokens") == [f"tok{i}" for i in range(VOCAB)]
    copied = {t.name: t for t in reader.tensors if t.name != "rope_freqs.weight"}
    assert set(copied) == set(tensors)
    originals = {t.name: t for t in gguf.GGUFReader(str(source)).tensors}
    for name, data in tensors.items():
        assert copied[name].tensor_type == originals[name].tensor_type, name
        np.testing.assert_array_equal(copied[name].shape, originals[name].shape, err_msg=name)
        np.testing.assert_array_equal(np.asarray(copied[name].data).reshape(data.shape), data, err_msg=name)


def test_existing_rope_freqs_is_replaced(tmp_path, rng, capsys):
    model = _airophin_like(tmp_path)
    source, out = tmp_path / "tiny.gguf", tmp_path / "out.gguf"
    _write_gguf(source, rng, rope_freqs=rng.uniform(1, 8, HEAD_DIM // 2).astype(np.float32))
    assert main(["export", "--to", "gguf", model, "--gguf", str(source), "--out", str(out)]) == 0
    assert "replaced rope_freqs" in capsys.readouterr().out
    reader = gguf.GGUFReader(str(out))
    rope_freqs = [t for t in reader.tensors if t.name == "rope_freqs.weight"]
    assert len(rope_freqs) == 1
    np.testing.assert_array_equal(rope_freqs[0].data, _core.frequency_factors(RopePlan.from_config(model).core))


def _expect_refused(capsys, argv, file, field) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"pntk: error: {file}: {field}: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("damage", ["text", "random", "empty", "truncated", "bad-version"])
def test_non_gguf_input_is_refused(tmp_path, rng, capsys, damage):
    model = _airophin_like(tmp_path)
    source, out = tmp_path / "bad.gguf", tmp_path / "out.gguf"
    if damage == "text":
        source.write_text("this is a config, not a model\n")
    elif damage == "random":
        source.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif damage == "empty":
        source.write_bytes(b"")
    else:
        good = tmp_path / "good.gguf"
        _write_gguf(good, rng)
        data = bytearray(good.read_bytes())
        if damage == "truncated":  # cut inside the metadata
            data = data[: len(data) // 50]
        else:
            data[4:8] = (99).to_bytes(4, "little")
        source.write_bytes(bytes(data))
    _expect_refused(capsys, ["export", "--to", "gguf", model, "--gguf", str(source), "--out", str(out)],
                    str(source), "(gguf)")
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(p for p in os.listdir(tmp_path) if not p.startswith(".pntk-"))


def test_gguf_of_another_model_is_refused(tmp_path, rng, capsys):
    model = _airophin_like(tmp_path)
    source, out = tmp_path / "other.gguf", tmp_path / "out.gguf"
    _write_gguf(source, rng, rope_dim=HEAD_DIM // 2)
    _expect_refused(capsys, ["export", "--to", "gguf", model, "--gguf", str(source), "--out", str(out)],
                    str(source), f"{ARCH}.rope.dimension_count")
    assert not out.exists()
    _write_gguf(source, rng, arch="phi3")
    _expect_refused(capsys, ["export", "--to", "gguf", model, "--gguf", str(source), "--out", str(out)],
                    str(source), "general.architecture")
    assert not out.exists()


def test_gguf_is_never_edited_in_place(tmp_path, rng, capsys):
    model = _airophin_like(tmp_path)
    source = tmp_path / "tiny.gguf"
    _write_gguf(source, rng)
    before = source.read_bytes()
    _expect_refused(capsys, ["export", "--to", "gguf", model, "--gguf", str(source), "--out", str(source)],
                    str(source), "(path)")
    assert source.read_bytes() == before
