"""Run a real ExLlama v1 model.py's loading code on the CPU: a stub for its CUDA extension and a
tiny random GPTQ checkpoint. ExLlama.__init__ then reads the weights, builds its RoPE tables and
layers, and ExLlama.forward gets as far as the first kernel call; that covers everything pntk
changes (config, tables, the position check). Used by the tests (PyPI's exllama 0.1.0) and by
scripts/check_patches_upstream.sh (the pinned 3b013cd and 0.0.17 files, patched).
"""
import importlib
import importlib.util
import json
import sys
import types

import torch
from safetensors.torch import save_file

TINY_PNTK_CONFIG = dict(
    hidden_size=256, intermediate_size=512, num_attention_heads=2, num_hidden_layers=2, vocab_size=64,
    rms_norm_eps=1e-5, initializer_range=0.02, max_position_embeddings=1024,
    original_max_position_embeddings=256, rope_theta=10000.0, model_type="llama",
    bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # head_dim 128, pntk scaling factor 1024 // 256 = 4


def cuda_ext_stub(name: str = "cuda_ext") -> types.ModuleType:
    """The names ExLlama's model.py calls at load time, as no-ops; any kernel call fails loudly."""

    def kernel(*args, **kwargs):
        raise RuntimeError("the CPU stub of ExLlama's CUDA extension has no kernels")

    stub = types.ModuleType(name)
    stub.exllama_ext = types.SimpleNamespace(
        set_tuning_params=lambda *args: None, prepare_buffers=lambda *args: None, cleanup=lambda: None,
        q4_attn=kernel, q4_attn_2=kernel, q4_mlp=kernel, rope_=kernel,
    )
    stub.none_tensor = torch.empty((1, 1), device="meta")
    stub.ext_make_q4 = lambda *args: object()
    stub.ext_q4_matmul = stub.ext_rms_norm = stub.ext_half_matmul = kernel
    return stub


def write_tiny_gptq_model(directory, generator, config=TINY_PNTK_CONFIG, group_size=64):
    """config.json + model.safetensors: random fp16 embeddings/norms/head, random GPTQ v1 linears."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    tensors = {
        "model.embed_tokens.weight": torch.randn(config["vocab_size"], hidden, generator=generator).half(),
        "model.norm.weight": torch.rand(hidden, generator=generator).half() + 0.5,
        "lm_head.weight": torch.randn(config["vocab_size"], hidden, generator=generator).half(),
    }
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
              "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
              "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter), "mlp.down_proj": (inter, hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        tensors[prefix + "input_layernorm.weight"] = torch.rand(hidden, generator=generator).half() + 0.5
        tensors[prefix + "post_attention_layernorm.weight"] = torch.rand(hidden, generator=generator).half() + 0.5
        for name, (rows, columns) in shapes.items():
            groups = rows // group_size
            key = prefix + name
            tensors[key + ".qweight"] = torch.randint(-2**31, 2**31 - 1, (rows // 8, columns), generator=generator,
                                                      dtype=torch.int64).to(torch.int32)
            tensors[key + ".qzeros"] = torch.randint(-2**31, 2**31 - 1, (groups, columns // 8), generator=generator,
                                                     dtype=torch.int64).to(torch.int32)
            tensors[key + ".scales"] = (torch.rand(groups, columns, generator=generator) * 0.01).half()
            tensors[key + ".g_idx"] = torch.arange(rows, dtype=torch.int32) // group_size
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def load_on_cpu(module, directory, max_seq_len=None):
    """ExLlamaConfig + ExLlama from a model directory, every layer on the CPU."""
    config = module.ExLlamaConfig(str(directory / "config.json"))
    config.model_path = str(directory / "model.safetensors")
    if max_seq_len is not None:
        config.max_seq_len = max_seq_len
    device_map = config.device_map
    device_map.embed_tokens = device_map.norm = device_map.lm_head = "cpu"
    device_map.layers = ["cpu"] * config.num_hidden_layers
    return module.ExLlama(config)


def import_pypi_exllama(monkeypatch):
    """A fresh exllama.model from PyPI's exllama 0.1.0 (its CUDA extension, built at import, stubbed)."""
    assert importlib.util.find_spec("exllama") is not None, (
        "PyPI's exllama 0.1.0 is a test dependency (scripts/setup.sh installs it)")
    monkeypatch.setitem(sys.modules, "exllama.cuda_ext", cuda_ext_stub("exllama.cuda_ext"))
    monkeypatch.delitem(sys.modules, "exllama.model", raising=False)
    return importlib.import_module("exllama.model")
