"""A stand-in for ExLlama v1's model.py: the same class names, attributes and call points that
pntk's patches and runtime hook use, on the CPU, with no CUDA extension. Written for these tests
from ExLlama's documented behaviour (not its code):

- ExLlamaConfig(path) reads config.json; rotary_embedding_base = rope_theta (10000 if absent),
  head_dim = hidden_size / heads, max_seq_len 2048, alpha_value / compress_pos_emb 1;
  calculate_rotary_embedding_base() multiplies the base by alpha^(d/(d-2)).
- ExLlama(config) builds, per device of device_map.layers, fp16 (sin, cos) [1, 1, max_seq_len, d]
  from fp32 inv_freq = base^(-2i/d) and positions / compress_pos_emb, and hands them to each
  layer's attention; _forward(input_ids, cache) reads rows past_len .. past_len + seq_len - 1.
- Ex4bitLinear(config, in, out, has_bias, tensors, key) keeps the GPTQ tensors; forward(x, lora).
"""
import json

import torch


class ExLlamaDeviceMap:
    def __init__(self, num_layers):
        self.layers = ["cpu"] * num_layers

    def get_layers_devs(self):
        return sorted(set(self.layers))


class ExLlamaConfig:
    def __init__(self, model_config_path):
        with open(model_config_path) as f:
            values = json.load(f)
        self.hidden_size = values["hidden_size"]
        self.num_attention_heads = values["num_attention_heads"]
        self.num_hidden_layers = values["num_hidden_layers"]
        self.head_dim = self.hidden_size // self.num_attention_heads
        self.rotary_embedding_base = values.get("rope_theta", 10000.0)
        self.device_map = ExLlamaDeviceMap(self.num_hidden_layers)
        self.max_seq_len = 2048
        self.compress_pos_emb = 1.0
        self.alpha_value = 1.0
        self.fused_attn = True
        self.fused_mlp_thd = 2

    def calculate_rotary_embedding_base(self):
        self.rotary_embedding_base *= self.alpha_value ** (self.head_dim / (self.head_dim - 2))


def exllama_tables(config, device):
    """ExLlama's own tables, from the behaviour described above (the reference for overrides)."""
    exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float32) / config.head_dim
    inv_freq = 1.0 / (config.rotary_embedding_base ** exponents)
    positions = torch.arange(config.max_seq_len, dtype=torch.float32) / config.compress_pos_emb
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.sin()[None, None].half().to(device), angles.cos()[None, None].half().to(device)


class Ex4bitLinear:
    def __init__(self, config, in_features, out_features, has_bias, tensors, key):
        self.config, self.key = config, key
        self.in_features, self.out_features = in_features, out_features
        self.qweight = tensors[key + ".qweight"]
        self.qzeros = tensors[key + ".qzeros"]
        self.scales = tensors[key + ".scales"]
        self.g_idx = tensors.get(key + ".g_idx")
        self.bias = tensors.get(key + ".bias") if has_bias else None

    def lora_applies(self, lora):
        return lora is not None and self.key + ".lora_A.weight" in lora.tensors

    def lora_apply(self, lora, x):
        return (x @ lora.tensors[self.key + ".lora_A.weight"]) @ lora.tensors[self.key + ".lora_B.weight"]

    def forward(self, x, lora):
        raise RuntimeError("the stand-in has no CUDA q4 kernel")


class _Attention:
    def __init__(self, sin, cos):
        self.sin, self.cos = sin, cos


class _Layer:
    def __init__(self, sin, cos):
        self.self_attn = _Attention(sin, cos)


class ExLlamaCache:
    def __init__(self, model):
        self.current_seq_len = 0


class ExLlama:
    def __init__(self, config):
        self.config = config
        self.sincos = {device: exllama_tables(config, device) for device in config.device_map.get_layers_devs()}
        self.layers = [_Layer(*self.sincos[device]) for device in config.device_map.layers]

    def _forward(self, input_ids, cache, last_id_only=True, preprocess_only=False, lora=None, output_device=None,
                 input_mask=None):
        """Returns the (sin, cos) rows each layer would rotate with, as ExLlama's kernel reads them."""
        begin, end = cache.current_seq_len, cache.current_seq_len + input_ids.shape[-1]
        cache.current_seq_len = end
        return [(layer.self_attn.sin[0, 0, begin:end], layer.self_attn.cos[0, 0, begin:end]) for layer in self.layers]
