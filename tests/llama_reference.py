"""A Llama forward pass written from the model's definition, for checking RoPE integrations, and a
tiny random Llama to run it on (shared by the Transformers 5 and 4.3x integration tests).

Tolerance: everything runs in fp32 with identical weights and identical fp32 tables (the reference
in float64), so the only differences are rounding and summation order in matmul/softmax (about
1e-6 relative per op, 2 layers); RELATIVE_TOLERANCE = 1e-4 of max|logit| leaves a wide margin,
while a wrong RoPE table moves logits by a large fraction of their range (weights are drawn with
a large initializer_range so that attention, and so position, matters).
"""
import json
import math

import torch

RELATIVE_TOLERANCE = 1e-4
WRONG_ROPE_MIN_RELATIVE_DIFF = 1e-2  # an unpatched model must be at least this far off

TINY = dict(
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention, head_dim 16
    num_hidden_layers=2,
    vocab_size=97,
    rms_norm_eps=1e-5,
    max_position_embeddings=256,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    initializer_range=0.25,  # sharp attention: positions matter to the logits
)
PNTK_TINY = dict(TINY, original_max_position_embeddings=64)  # airophin style: s = 256 // 64 = 4


def tiny_model(config: dict, seed: int):
    torch.manual_seed(seed)
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="eager"))
    with torch.no_grad():  # LayerNorm weights start at 1: draw them too, so no weight is trivial
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    return model.eval()


def write_config(tmp_path, config: dict):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(config, model_type="llama", architectures=["LlamaForCausalLM"])))
    return path


def reference_logits(model, input_ids, position_ids, cos, sin):
    """Llama forward from its definition, in float64, RoPE from the given [positions, d] tables."""
    c = model.config
    w = {k: v.double() for k, v in model.state_dict().items()}
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
    head_dim = c.hidden_size // heads
    batch, length = input_ids.shape
    cos, sin = cos.double()[position_ids][:, None], sin.double()[position_ids][:, None]  # [B, 1, T, d]

    def rms_norm(x, weight):
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.rms_norm_eps)

    def rotate_half(x):  # NeoX layout: pairs (i, i + d/2)
        return torch.cat((-x[..., head_dim // 2 :], x[..., : head_dim // 2]), dim=-1)

    def heads_of(x, count):
        return x.view(batch, length, count, head_dim).transpose(1, 2)

    causal = torch.full((length, length), -math.inf, dtype=torch.float64).triu(1)
    h = w["model.embed_tokens.weight"][input_ids]
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"])
        q = heads_of(x @ w[p + "self_attn.q_proj.weight"].T, heads)
        k = heads_of(x @ w[p + "self_attn.k_proj.weight"].T, kv_heads)
        v = heads_of(x @ w[p + "self_attn.v_proj.weight"].T, kv_heads)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal
        attention = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, -1)
        h = h + attention @ w[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(x @ w[p + "mlp.gate_proj.weight"].T)
        h = h + (gate * (x @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rms_norm(h, w["model.norm.weight"]) @ w["lm_head.weight"].T


def inputs(generator, vocab, max_position, length=40, start=None):
    """Random token ids [2, length] at positions start.. (a random start by default)."""
    if start is None:
        start = int(torch.randint(0, max_position - length, (1,), generator=generator))
    input_ids = torch.randint(0, vocab, (2, length), generator=generator)
    position_ids = (torch.arange(length) + start).expand(2, -1)
    return input_ids, position_ids


def logits_of(model, input_ids, position_ids):
    with torch.no_grad():
        return model(input_ids=input_ids, position_ids=position_ids).logits.double()


def relative_max_diff(a, b):
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return float((a - b).abs().max() / b.abs().max())
