"""pntk's q4 matmul inside runners: Transformers/AutoGPTQ QuantLinear swapped for Q4Linear, and
ExLlama's Ex4bitLinear routed through pntk.Q4Matrix (PNTK_EXLLAMA_Q4=1), on the CPU.

References: AutoGPTQ's own QuantLinear (its pack() and its torch dequantizing forward, loaded from
the installed auto-gptq 0.7.1 file), and an fp64 product with weights dequantized here from the
GPTQ format definition (W[k, n] = scale[g_idx[k], n] * (q[k, n] - zero[g_idx[k], n])).

Tolerances: one product y = x @ W in fp16 with fp32 accumulation differs from the fp64 reference
by the final fp16 rounding (2^-11 relative) plus accumulation order: RELATIVE_TOLERANCE = 2e-3 of
max|y|. Through a whole fp16 model (AutoGPTQ's forward against pntk's, 2 layers, 14 products,
norms and softmax, each rounding its fp16 output independently) ulp-level differences compound:
MODEL_TOLERANCE = 1e-2 of max|logit| (observed about 1.4e-3). Reading the zeros with the wrong
checkpoint format moves every weight by one scale step, which must move logits by far more.
"""
import copy
import importlib.util
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pntk

from exllama_cpu import import_pypi_exllama, load_on_cpu, write_tiny_gptq_model
from llama_reference import TINY, tiny_model
from pntk.examples import example_path
from pntk.integrations import exllama
from pntk.integrations import transformers as pntk_tf
from pntk.integrations.q4_linear import Q4Linear

RELATIVE_TOLERANCE = 2e-3
MODEL_TOLERANCE = 1e-2
GROUP_SIZE = 32
STANDIN = Path(__file__).parent / "standins" / "exllama_model.py"


def auto_gptq_quant_linear_class():
    """auto-gptq's QuantLinear (qlinear_cuda), loaded from its file: the package's __init__ wants
    accelerate/peft, which pntk does not (scripts/setup.sh installs auto-gptq without deps)."""
    spec = importlib.util.find_spec("auto_gptq")
    assert spec is not None, "auto-gptq 0.7.1 is a test dependency (scripts/setup.sh installs it)"
    path = Path(list(spec.submodule_search_locations)[0]) / "nn_modules" / "qlinear" / "qlinear_cuda.py"
    module_spec = importlib.util.spec_from_file_location("auto_gptq.nn_modules.qlinear.qlinear_cuda", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.QuantLinear


def random_gptq(generator, in_features, out_features, act_order):
    """Integer weights q [K, N] in 0..15, zeros z [G, N] in 1..15, fp16 scales [G, N], g_idx [K]."""
    groups = in_features // GROUP_SIZE
    q = torch.randint(0, 16, (in_features, out_features), generator=generator)
    z = torch.randint(1, 16, (groups, out_features), generator=generator)
    scales = (torch.rand(groups, out_features, generator=generator) * 0.02 + 0.001).half()
    g_idx = torch.arange(in_features, dtype=torch.int32) // GROUP_SIZE
    if act_order:
        g_idx = g_idx[torch.randperm(in_features, generator=generator)]
    return q, z, scales, g_idx


def dequantize_fp64(q, z, scales, g_idx):
    return scales.double()[g_idx.long()] * (q.double() - z.double()[g_idx.long()])


def pack_gptq_v1(q, z):
    """qweight [K/8, N]: row k in word k/8 at bits 4*(k%8); qzeros [G, N/8]: (z - 1) & 15 at 4*(n%8)."""
    shifts = torch.arange(8) * 4
    qweight = (q.reshape(-1, 8, q.shape[1]) << shifts[None, :, None]).sum(1)
    stored = (z - 1) & 15
    qzeros = (stored.reshape(stored.shape[0], -1, 8) << shifts[None, None, :]).sum(2)
    to_int32 = lambda words: (words - ((words >> 31) << 32)).to(torch.int32)  # noqa: E731 (uint32 bits)
    return to_int32(qweight), to_int32(qzeros)


def relative_max_diff(a, b):
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("act_order", [False, True], ids=["groups-in-order", "act-order"])
def test_swap_quant_linear_in_a_tiny_llama(seed, generator, act_order):
    QuantLinear = auto_gptq_quant_linear_class()
    model = tiny_model(TINY, seed).half()  # AutoGPTQ keeps fp16 scales; its torch forward needs x in fp16
    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and "layers" in name]
    for name in names:
        linear = model.get_submodule(name)
        q, z, scales, g_idx = random_gptq(generator, linear.in_features, linear.out_features, act_order)
        quant = QuantLinear(4, GROUP_SIZE, linear.in_features, linear.out_features, bias=False)
        source = torch.nn.Linear(linear.in_features, linear.out_features, bias=False)
        source.weight.data = dequantize_fp64(q, z, scales, g_idx).T.half()  # exact: fp16 scale x 4-bit integer
        quant.pack(source, scales.T, z.half().T, g_idx)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, quant)
    input_ids = torch.randint(0, TINY["vocab_size"], (2, 24), generator=generator)
    misread = copy.deepcopy(model)
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
        assert pntk_tf.swap_quant_linear(model) == len(names)
        assert all(isinstance(model.get_submodule(name), Q4Linear) for name in names)
        swapped = model(input_ids=input_ids).logits
        pntk_tf.swap_quant_linear(misread, checkpoint_format="gptq_v2")
        wrong = misread(input_ids=input_ids).logits
    assert relative_max_diff(swapped, expected) < MODEL_TOLERANCE
    assert relative_max_diff(wrong, expected) > 10 * MODEL_TOLERANCE


def test_swapped_matrix_dequantizes_to_the_format_definition(generator):
    QuantLinear = auto_gptq_quant_linear_class()
    q, z, scales, g_idx = random_gptq(generator, 128, 64, act_order=True)
    quant = QuantLinear(4, GROUP_SIZE, 128, 64, bias=True, weight_dtype=torch.float16)
    qweight, qzeros = pack_gptq_v1(q, z)
    quant.qweight, quant.qzeros, quant.scales, quant.g_idx = qweight, qzeros, scales, g_idx
    quant.bias = torch.randn(64, generator=generator).half()
    holder = torch.nn.Sequential(quant)
    assert pntk_tf.swap_quant_linear(holder) == 1
    weights = holder[0].q4.dequantize(torch.float32)  # fp16 scale x 4-bit integer: exact in fp32
    assert torch.equal(weights.double(), dequantize_fp64(q, z, scales, g_idx))
    x = torch.randn(3, 128, generator=generator).half()
    reference = x.double() @ dequantize_fp64(q, z, scales, g_idx) + quant.bias.double()
    assert relative_max_diff(holder(x), reference) < RELATIVE_TOLERANCE


def test_quant_linear_that_pntk_cannot_run_is_refused(generator):
    marlin = type("QuantLinear", (torch.nn.Module,), {"__module__": "auto_gptq.nn_modules.qlinear.qlinear_marlin"})()
    marlin.qweight = torch.zeros(1)
    with pytest.raises(ValueError, match=r"^0: qweight: .*qlinear_marlin repacks the weights"):
        pntk_tf.swap_quant_linear(torch.nn.Sequential(marlin))
    QuantLinear = auto_gptq_quant_linear_class()
    with pytest.raises(ValueError, match=r"^0: bits: pntk runs 4-bit GPTQ only, got 8"):
        pntk_tf.swap_quant_linear(torch.nn.Sequential(QuantLinear(8, GROUP_SIZE, 64, 64, bias=False)))


def test_exllama_q4_switch_routes_ex4bitlinear_through_pntk(monkeypatch, generator, tmp_path):
    spec = importlib.util.spec_from_file_location("standin_exllama_q4", STANDIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    exllama.install(module)
    q, z, scales, g_idx = random_gptq(generator, 256, 128, act_order=True)
    qweight, qzeros = pack_gptq_v1(q, z)
    bias = torch.randn(128, generator=generator).half()
    tensors = {"l.qweight": qweight, "l.qzeros": qzeros, "l.scales": scales, "l.g_idx": g_idx, "l.bias": bias}
    config_path = Path(example_path("airophin")) / "config.json"
    monkeypatch.delenv(exllama.Q4_SWITCH, raising=False)
    config = module.ExLlamaConfig(config_path)
    assert module.Ex4bitLinear(config, 256, 128, True, tensors, "l").pntk_q4 is None  # off by default
    monkeypatch.setenv(exllama.Q4_SWITCH, "1")
    config = module.ExLlamaConfig(config_path)
    assert config.pntk_q4 and config.fused_attn
    linear = module.Ex4bitLinear(config, 256, 128, True, tensors, "l")
    assert linear.pntk_q4 is not None
    assert (config.fused_attn, config.fused_mlp_thd) == (False, 0)  # ExLlama's fused kernels read its own q4
    x = torch.randn(1, 5, 256, generator=generator).half()
    reference = x.double() @ dequantize_fp64(q, z, scales, g_idx) + bias.double()
    assert relative_max_diff(linear.forward(x, None), reference) < RELATIVE_TOLERANCE
    lora = types.SimpleNamespace(tensors={"l.lora_A.weight": torch.randn(256, 4, generator=generator).half(),
                                          "l.lora_B.weight": torch.randn(4, 128, generator=generator).half()})
    with_lora = reference + (x.double() @ lora.tensors["l.lora_A.weight"].double()) @ lora.tensors["l.lora_B.weight"].double()
    assert relative_max_diff(linear.forward(x, lora), with_lora) < RELATIVE_TOLERANCE


def test_pypi_exllama_q4_switch_on_a_real_ex4bitlinear(monkeypatch, tmp_path, generator):
    """PyPI's exllama 0.1.0 (hooked, CPU, CUDA extension stubbed): its Ex4bitLinear layers get pntk
    matrices and their forward runs through pntk."""
    module = import_pypi_exllama(monkeypatch)
    exllama.install(module)
    monkeypatch.setenv(exllama.Q4_SWITCH, "1")
    directory = write_tiny_gptq_model(tmp_path / "tiny", generator)
    model = load_on_cpu(module, directory, max_seq_len=64)
    assert (model.config.fused_attn, model.config.fused_mlp_thd) == (False, 0)
    tensors = load_file(str(directory / "model.safetensors"))
    linear = model.layers[1].mlp.down_proj
    assert isinstance(linear.pntk_q4, pntk.Q4Matrix)
    key = "model.layers.1.mlp.down_proj"
    shifts = torch.arange(8) * 4
    q = ((tensors[key + ".qweight"][:, None, :] >> shifts[None, :, None]) & 15).reshape(-1, linear.out_features)
    z = (((tensors[key + ".qzeros"][:, :, None] >> shifts) & 15).reshape(q.shape[0] // 64, -1) + 1) & 15
    reference_w = dequantize_fp64(q, z, tensors[key + ".scales"], tensors[key + ".g_idx"])
    x = torch.randn(1, 3, linear.in_features, generator=generator).half()
    assert relative_max_diff(linear.forward(x, None), x.double() @ reference_w) < RELATIVE_TOLERANCE


def test_apply_with_swap_q4_gives_tables_and_q4_matrices(tmp_path, seed, generator):
    from llama_reference import PNTK_TINY, write_config

    QuantLinear = auto_gptq_quant_linear_class()
    model = tiny_model(PNTK_TINY, seed).half()
    q, z, scales, g_idx = random_gptq(generator, 64, 64, act_order=False)
    quant = QuantLinear(4, GROUP_SIZE, 64, 64, bias=False)
    quant.qweight, quant.qzeros = pack_gptq_v1(q, z)
    quant.scales, quant.g_idx = scales, g_idx
    model.model.layers[0].self_attn.o_proj = quant
    plan = pntk_tf.apply(model, write_config(tmp_path, PNTK_TINY), announce=False, swap_q4=True)
    rotaries = [m.rotary_emb for m in model.modules() if isinstance(getattr(m, "rotary_emb", None), torch.nn.Module)]
    assert plan.method == "pntk" and rotaries  # the model's (Transformers 5) or each layer's (4.3x)
    assert all(isinstance(rotary, pntk_tf.PntkRotaryEmbedding) for rotary in rotaries)
    swapped = model.model.layers[0].self_attn.o_proj
    assert isinstance(swapped, Q4Linear)
    assert torch.equal(swapped.q4.dequantize(torch.float32).double(), dequantize_fp64(q, z, scales, g_idx))
