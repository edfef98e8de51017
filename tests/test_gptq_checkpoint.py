"""GPTQ checkpoints: pntk's packer (quantize_gptq), load_gptq on real safetensors files,
a checkpoint packed by a third-party packer (auto-gptq), and bad checkpoints."""
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import pntk
from pntk.gptq import quantize_gptq, save_gptq_checkpoint

import gptq_reference as ref

LAYERS = ("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj")


@pytest.mark.parametrize("checkpoint_format", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_quantize_gptq_follows_the_format(checkpoint_format, sym, act_order, generator):
    k, n, group_size = 256, 48, 32
    weight = torch.randn(k, n, generator=generator)
    t = quantize_gptq(weight, group_size, act_order, sym, checkpoint_format, generator)
    assert t["qweight"].dtype == t["qzeros"].dtype == t["g_idx"].dtype == torch.int32
    assert t["scales"].dtype == torch.float16 and t["scales"].shape == (k // group_size, n)
    counts = torch.bincount(t["g_idx"].long(), minlength=k // group_size)
    assert (counts == group_size).all()
    assert bool((t["g_idx"][1:] < t["g_idx"][:-1]).any()) == act_order
    if sym and checkpoint_format == "gptq":
        assert (t["qzeros"] == 0x77777777).all()
    w64 = ref.dequantize(**t, checkpoint_format=checkpoint_format)
    # round to nearest: |W - Wq| <= scale / 2 inside the grid, up to a scale at its clamped
    # ends (the rounded zero and the fp16 scale move the grid by up to half a step)
    step = np.abs(t["scales"].double().numpy()[t["g_idx"].long().numpy()])
    error = np.abs(w64 - weight.double().numpy())
    assert np.all(error <= step * 1.001)
    assert error.mean() <= 0.3 * step.mean()
    w = pntk.Q4Matrix.from_gptq(**t, checkpoint_format=checkpoint_format)
    assert np.array_equal(w.dequantize().double().numpy(), w64)


def write_checkpoint(path, generator, checkpoint_format="gptq", group_size=32, desc_act=True, config_json=False):
    modules, weights = {}, {}
    for name, (k, n) in zip(LAYERS, [(128, 64), (256, 40)]):
        weight = torch.randn(k, n, generator=generator)
        modules[name] = quantize_gptq(weight, group_size, desc_act, False, checkpoint_format, generator)
        modules[name]["bias"] = torch.randn(n, generator=generator).to(torch.float16)
        weights[name] = modules[name]
    config = {"bits": 4, "group_size": group_size, "desc_act": desc_act, "sym": False, "checkpoint_format": checkpoint_format}
    save_gptq_checkpoint(path, modules, config)
    if config_json:
        (path / "quantize_config.json").unlink()
        (path / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": dict(config, quant_method="gptq")}))
    return weights


@pytest.mark.parametrize("config_json", [False, True])
@pytest.mark.parametrize("checkpoint_format", ["gptq", "gptq_v2"])
def test_load_gptq_reads_every_module(tmp_path, generator, rng, checkpoint_format, config_json):
    written = write_checkpoint(tmp_path, generator, checkpoint_format, config_json=config_json)
    loaded = pntk.load_gptq(tmp_path)
    assert sorted(loaded) == sorted(LAYERS)
    for name, t in written.items():
        w = loaded[name]
        assert w.act_order and w.group_size == 32
        w64 = ref.dequantize(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], checkpoint_format)
        x = torch.from_numpy(rng.standard_normal((3, w.in_features)).astype(np.float32)).to(torch.float16)
        assert ref.relative_error(w(x), ref.matmul(x, w64, t["bias"])) <= ref.TOLERANCE[torch.float16]


def test_load_gptq_reads_every_shard(tmp_path, generator):
    written = write_checkpoint(tmp_path, generator)
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    for i, layer in enumerate(LAYERS):
        save_file({k: v for k, v in tensors.items() if k.startswith(layer)}, str(tmp_path / f"model-0000{i + 1}-of-00002.safetensors"))
    assert sorted(pntk.load_gptq(tmp_path)) == sorted(written)


# ---- a checkpoint packed by third-party code -------------------------------------------


def auto_gptq_quant_linear():
    """auto-gptq's QuantLinear (qlinear_cuda: pack() with g_idx, and a torch dequantizing
    forward on the CPU), imported from the installed package file. The package's __init__
    needs accelerate/peft, which pntk does not, so only that module is loaded."""
    spec = importlib.util.find_spec("auto_gptq")
    if spec is None:
        pytest.skip("auto-gptq is not installed (scripts/setup.sh installs auto-gptq==0.7.1 without deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "nn_modules" / "qlinear" / "qlinear_cuda.py"
    module_spec = importlib.util.spec_from_file_location("auto_gptq_qlinear_cuda", path)
    module = importlib.util.module_from_spec(module_spec)
    with warnings.catch_warnings():  # its imports may warn about newer transformers/torch
        warnings.simplefilter("ignore")
        module_spec.loader.exec_module(module)
    return module.QuantLinear


def test_checkpoint_packed_by_auto_gptq(tmp_path, rng):
    QuantLinear = auto_gptq_quant_linear()
    k, n, group_size = 256, 64, 32
    groups = k // group_size
    g_idx = np.arange(k) // group_size
    rng.shuffle(g_idx)  # act-order
    g_idx = torch.from_numpy(g_idx.astype(np.int32))
    # Exact inputs for the packer: W = s * (q - z) with fp16-representable scales, z in 1..15
    # (auto-gptq's v1 packing cannot store zero 0) so pack() recovers q exactly.
    scales = torch.from_numpy(rng.uniform(0.005, 0.05, (n, groups)).astype(np.float16)).float()
    zeros = torch.from_numpy(rng.integers(1, 16, (n, groups)).astype(np.float32))
    q = torch.from_numpy(rng.integers(0, 16, (n, k)).astype(np.float32))
    linear = torch.nn.Linear(k, n, bias=True)
    with torch.no_grad():
        linear.weight.copy_(scales[:, g_idx.long()] * (q - zeros[:, g_idx.long()]))
        linear.bias.copy_(torch.from_numpy(rng.standard_normal(n).astype(np.float16)).float())
    layer = QuantLinear(4, group_size, k, n, bias=True, weight_dtype=torch.float32)
    layer.pack(linear, scales, zeros, g_idx)

    module = "model.layers.0.self_attn.o_proj"
    parts = dict(qweight=layer.qweight, qzeros=layer.qzeros, scales=layer.scales.half(), g_idx=layer.g_idx, bias=layer.bias.half())
    config = {"bits": 4, "group_size": group_size, "desc_act": True, "sym": False}  # no format key: v1 ("gptq")
    save_gptq_checkpoint(tmp_path, {module: parts}, config)
    w = pntk.load_gptq(tmp_path)[module]
    assert w.act_order and (w.in_features, w.out_features) == (k, n)

    with torch.no_grad():
        theirs = layer(torch.eye(k)) - layer.bias  # auto-gptq's own dequantization, exact in fp32
    assert torch.equal(w.dequantize(), theirs)
    x = torch.from_numpy(rng.standard_normal((5, k)).astype(np.float32))
    with torch.no_grad():
        expected = layer(x).double().numpy()
    assert ref.relative_error(w(x), expected) <= ref.TOLERANCE[torch.float32]


# ---- bad checkpoints -------------------------------------------------------------------


def edit_config(path, **changes):
    config = json.loads((path / "quantize_config.json").read_text())
    config.update(changes)
    (path / "quantize_config.json").write_text(json.dumps(config))


def rewrite_tensors(path, edit):
    from safetensors.torch import load_file

    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def test_bits_other_than_4(tmp_path, generator):
    write_checkpoint(tmp_path, generator)
    edit_config(tmp_path, bits=8)
    with pytest.raises(pntk.ConfigError, match=r"quantize_config.json: bits: only 4-bit GPTQ is supported, got 8"):
        pntk.load_gptq(tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"checkpoint_format": "marlin"}, r"quantize_config.json: checkpoint_format: must be one of"),
        ({"format": "gptq_v2"}, r"quantize_config.json: checkpoint_format: disagrees with format"),
        ({"group_size": 0}, r"quantize_config.json: group_size: must be -1 or positive, got 0"),
        ({"group_size": "32"}, r"quantize_config.json: group_size: has the wrong type \(str\)"),
        ({"group_size": 64}, r"model.safetensors: model.layers.0.\w+.\w+_proj.scales: \d+ groups, but group_size 64"),
    ],
)
def test_bad_config(tmp_path, generator, changes, message):
    write_checkpoint(tmp_path, generator)
    edit_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        pntk.load_gptq(tmp_path)


def test_missing_config_and_directory(tmp_path, generator):
    with pytest.raises(pntk.ConfigError, match=r"missing-dir: \(path\): not a directory"):
        pntk.load_gptq(tmp_path / "missing-dir")
    write_checkpoint(tmp_path, generator)
    (tmp_path / "quantize_config.json").unlink()
    with pytest.raises(pntk.ConfigError, match="quantize_config.json: missing"):
        pntk.load_gptq(tmp_path)


def test_missing_tensor(tmp_path, generator):
    write_checkpoint(tmp_path, generator)
    rewrite_tensors(tmp_path, lambda t: t.pop(f"{LAYERS[1]}.qzeros"))
    with pytest.raises(ValueError, match=rf"model.safetensors: {LAYERS[1]}.qzeros: missing"):
        pntk.load_gptq(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.update({f"{LAYERS[0]}.scales": t[f"{LAYERS[0]}.scales"].float()}), rf"{LAYERS[0]}.scales: must be float16, got float32"),
        (lambda t: t.update({f"{LAYERS[0]}.g_idx": t[f"{LAYERS[0]}.g_idx"] + 100}), rf"{LAYERS[0]}.g_idx: value \d+ at row 0 is outside"),
        (lambda t: t.update({f"{LAYERS[1]}.g_idx": t[f"{LAYERS[1]}.g_idx"][:128].contiguous()}), rf"{LAYERS[1]}.g_idx: shape must be \[K\]"),
        (lambda t: t.update({f"{LAYERS[1]}.qzeros": t[f"{LAYERS[1]}.qzeros"][:, :2].contiguous()}), rf"{LAYERS[1]}.qzeros: shape must be"),
    ],
)
def test_bad_tensor_in_file(tmp_path, generator, edit, message):
    write_checkpoint(tmp_path, generator)
    rewrite_tensors(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        pntk.load_gptq(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage header"])
def test_corrupt_safetensors(tmp_path, generator, damage):
    write_checkpoint(tmp_path, generator)
    shard = tmp_path / "model.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100] if damage == "truncate" else b"\xff" * 8 + data[8:])
    with pytest.raises(ValueError, match=r"model.safetensors: \(file\): not a readable safetensors file"):
        pntk.load_gptq(tmp_path)


def test_no_shards(tmp_path, generator):
    write_checkpoint(tmp_path, generator)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no \*.safetensors files"):
        pntk.load_gptq(tmp_path)
