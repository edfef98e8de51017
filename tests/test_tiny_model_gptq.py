"""`pntk make-tiny-model` and the GPTQ Llama loader, checked against references written here:
an fp64 dequantization from the GPTQ format definition (DESIGN.md) and Transformers' own Llama
forward pass on those dequantized weights."""
import hashlib
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pntk
from pntk.cli import main
from pntk.integrations import transformers as pntk_transformers
from pntk.integrations.gptq_llama import load_llama
from pntk.tiny_model import ARCHITECTURE, EXTENDED_LENGTH, FLOAT_MODEL_DIR, model_config
from pntk.tiny_model.generator import QUANTIZE_CONFIG, make_tiny_model, quantized_module_names
from pntk.tiny_model.tokenizer import TOKENIZER_FILES

MODULES = quantized_module_names(ARCHITECTURE["num_hidden_layers"])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny") / "tiny-gptq"
    make_tiny_model(directory)
    return directory


def dequantize_reference(qweight, qzeros, scales, g_idx) -> np.ndarray:
    """GPTQ v1, fp64: q[k, n] = bits 4*(k%8) of qweight[k//8, n]; z[g, n] = ((bits 4*(n%8) of
    qzeros[g, n//8]) + 1) & 15; W[k, n] = scales[g_idx[k], n] * (q[k, n] - z[g_idx[k], n])."""
    words = qweight.numpy().astype(np.uint32)
    k = np.arange(words.shape[0] * 8)
    q = (words[k // 8] >> (4 * (k % 8))[:, None].astype(np.uint32)) & 15
    zero_words = qzeros.numpy().astype(np.uint32)
    n = np.arange(zero_words.shape[1] * 8)
    z = (((zero_words[:, n // 8] >> (4 * (n % 8)).astype(np.uint32)) & 15) + 1) & 15
    g = g_idx.numpy().astype(np.int64)
    return scales.numpy().astype(np.float64)[g] * (q.astype(np.float64) - z[g].astype(np.float64))


def test_directory_layout(tiny_dir):
    assert sorted(p.name for p in tiny_dir.iterdir()) == sorted(
        ("config.json", "quantize_config.json", "model.safetensors") + TOKENIZER_FILES
    )
    assert json.loads((tiny_dir / "config.json").read_text()) == model_config()
    quantize = json.loads((tiny_dir / "quantize_config.json").read_text())
    assert quantize == QUANTIZE_CONFIG
    assert (quantize["bits"], quantize["group_size"], quantize["desc_act"]) == (4, 32, True)
    from transformers import AutoTokenizer, LlamaConfig

    config = LlamaConfig.from_pretrained(tiny_dir)
    assert (config.max_position_embeddings, config.original_max_position_embeddings) == (1024, 256)
    assert len(AutoTokenizer.from_pretrained(tiny_dir)) == ARCHITECTURE["vocab_size"]


def test_quantized_tensors_follow_the_format_and_the_float_weights(tiny_dir):
    tensors = load_file(str(tiny_dir / "model.safetensors"))
    float_tensors = load_file(str(FLOAT_MODEL_DIR / "model.safetensors"))
    assert not any(name.endswith(".weight") and name.rsplit(".", 1)[0] in MODULES for name in tensors)
    assert all(t.dtype == torch.float16 for name, t in tensors.items() if name.rsplit(".", 1)[0] not in MODULES)
    for module in MODULES:
        qweight, qzeros, scales, g_idx = (tensors[f"{module}.{key}"] for key in ("qweight", "qzeros", "scales", "g_idx"))
        weight = float_tensors[f"{module}.weight"].double().numpy().T  # [K, N]
        k, n = weight.shape
        assert (qweight.dtype, tuple(qweight.shape)) == (torch.int32, (k // 8, n))
        assert (qzeros.dtype, tuple(qzeros.shape)) == (torch.int32, (k // 32, n // 8))
        assert (scales.dtype, tuple(scales.shape)) == (torch.float16, (k // 32, n))
        assert g_idx.dtype == torch.int32 and sorted(g_idx.tolist()) == [i // 32 for i in range(k)]
        assert not torch.equal(g_idx, g_idx.sort().values), "desc_act: g_idx must not be sorted"
        assert (qzeros == 0x77777777).all(), "symmetric GPTQ v1 stores zero 8 as 7"
        reference = dequantize_reference(qweight, qzeros, scales, g_idx)
        error = np.linalg.norm(reference - weight) / np.linalg.norm(weight)
        assert 0.01 < error < 0.12, (module, error)
        # Round to nearest: every weight lies within half a step of its value, plus the clamp at
        # the top code when the fp16 scale rounded down (up to 8 codes x 2^-11 relative).
        step = scales.double().numpy()[g_idx.numpy()]
        assert (np.abs(reference - weight) <= (0.5 + 8 * 2.0**-11) * step).all(), module
        kernel = pntk.Q4Matrix.from_gptq(qweight, qzeros, scales, g_idx).dequantize(torch.float32)
        np.testing.assert_array_equal(kernel.numpy(), reference.astype(np.float32))


def test_generation_is_deterministic_and_atomic(tiny_dir, tmp_path):
    again = tmp_path / "again"
    make_tiny_model(again)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert {p.name: digest(p) for p in again.iterdir()} == {p.name: digest(p) for p in tiny_dir.iterdir()}
    with pytest.raises(ValueError, match="already exists"):
        make_tiny_model(again)
    make_tiny_model(again, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary directories left
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a GPTQ model directory"):
        make_tiny_model(other, force=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_cli_make_tiny_model(tmp_path, capsys):
    target = tmp_path / "m"
    assert main(["make-tiny-model", str(target)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"wrote .*: 14 GPTQ matrices \(4-bit, group 32, act-order\), largest relative error 0\.\d+", out)
    assert main(["make-tiny-model", str(target)]) == 2
    assert capsys.readouterr().err == f"pntk: error: {target}: (path): already exists (pass --force to replace it)\n"


def reference_model(tiny_dir):
    """Transformers' Llama with float weights = the fp64 dequantization, rounded to fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tensors = load_file(str(tiny_dir / "model.safetensors"))
    state = {name: t.float() for name, t in tensors.items() if name.rsplit(".", 1)[0] not in MODULES}
    for module in MODULES:
        parts = [tensors[f"{module}.{key}"] for key in ("qweight", "qzeros", "scales", "g_idx")]
        state[f"{module}.weight"] = torch.from_numpy(dequantize_reference(*parts).T.astype(np.float32))
    model = LlamaForCausalLM(LlamaConfig.from_pretrained(tiny_dir)).eval()
    model.load_state_dict(state, strict=False)
    return model


def test_loader_matches_transformers_on_dequantized_weights(tiny_dir, generator, capsys):
    model, plan = load_llama(tiny_dir)
    assert "scaling factor 4 (256 -> 1024 positions)" in capsys.readouterr().out
    assert plan.method == "pntk"
    assert sum(type(m).__name__ == "Q4Linear" for m in model.modules()) == len(MODULES)
    reference = reference_model(tiny_dir)
    pntk_transformers.apply(reference, plan=plan, announce=False)
    ids = torch.randint(3, ARCHITECTURE["vocab_size"], (2, EXTENDED_LENGTH), generator=generator)
    with torch.no_grad():
        got, want = model(input_ids=ids).logits, reference(input_ids=ids).logits
    assert torch.isfinite(got).all()
    # Same weights, fp32 activations: only the summation order differs (fp32 accumulation), which
    # over two layers and 1024 positions moves logits of size ~10 by ~1e-4 (norm-wise ~1e-6).
    assert float((got - want).norm() / want.norm()) < 1e-5
    assert float((got - want).abs().max()) < 1e-3 * float(want.abs().max())


def test_bad_gptq_directories_are_clear_errors(tiny_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["model.norm.weight"]
    from safetensors.torch import save_file

    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match=r"broken: model\.norm\.weight: missing in the safetensors files"):
        load_llama(broken, announce=False)
    config = json.loads((tiny_dir / "config.json").read_text())
    config["intermediate_size"] = 512
    (broken / "config.json").write_text(json.dumps(config))
    shutil.copyfile(tiny_dir / "model.safetensors", broken / "model.safetensors")
    with pytest.raises(ValueError, match=r"broken: model\.layers\.0\.mlp\.down_proj\.qweight: holds a 384x128 matrix, config\.json implies 512x128"):
        load_llama(broken, announce=False)


def test_tied_embeddings_share_one_tensor(tiny_dir, tmp_path, generator):
    import shutil

    from safetensors.torch import save_file

    tied = tmp_path / "tied"
    shutil.copytree(tiny_dir, tied)
    config = json.loads((tiny_dir / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (tied / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(tied / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(tied / "model.safetensors"))
    model, _ = load_llama(tied, announce=False)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(3, ARCHITECTURE["vocab_size"], (1, 64), generator=generator)
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        torch.testing.assert_close(model(input_ids=ids).logits, hidden @ model.model.embed_tokens.weight.T)
