"""Developer check: text-generation-webui 1.6.1's own loader code, patched by pntk, on the CPU.

    PY scripts/webui_upstream_smoke.py patch|hook WEBUI_DIR EXLLAMA_PACKAGE_DIR

WEBUI_DIR: a checkout of oobabooga/text-generation-webui at 1.6.1; EXLLAMA_PACKAGE_DIR: the
`exllama` package directory of jllllll/exllama 0.0.17. PY: a Python with pntk, Transformers
4.33 (the webui's pin), accelerate and PyYAML (e.g. scripts/make_tf433_env.sh's venv plus
`pip install accelerate==0.23.0 sentencepiece`). Both trees are copied, then either patched with
`pntk patch` (patch) or left as they are with pntk's runtime hook installed (hook); gradio
is replaced by a permissive stub (no UI is built) and ExLlama's CUDA extension by
tests/exllama_cpu.py's stub. Tiny random Llamas (pntk-scaled, and yarn, which Transformers 4.33
refuses to read) are written to a temporary models/ directory. Then, through the webui's own
modules: get_model_metadata's defaults, load_model with the Transformers loader for both models
(pntk tables in every layer, finite logits), and the ExLlama_HF loader (the patched exllama,
every layer on the CPU). Prints what it checked; exits non-zero on the first failure.
"""
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from exllama_cpu import cuda_ext_stub, write_tiny_gptq_model  # noqa: E402
from pntk import patching  # noqa: E402
from pntk.integrations import exllama as pntk_exllama  # noqa: E402
from pntk.integrations import transformers as pntk_tf  # noqa: E402
from pntk.integrations import webui as pntk_webui  # noqa: E402

TINY = dict(hidden_size=256, intermediate_size=512, num_attention_heads=2, num_hidden_layers=2, vocab_size=32,
            max_position_embeddings=1024, rms_norm_eps=1e-5, model_type="llama", architectures=["LlamaForCausalLM"],
            bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.02)
MODELS = {
    "tiny-pntk": dict(TINY, original_max_position_embeddings=256),
    "tiny-yarn": dict(TINY, rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
}


class _Anything(types.ModuleType):
    """gradio stand-in: every attribute and call gives another stand-in (no UI is built here)."""

    def __getattr__(self, name):
        if name.startswith("__"):  # module protocol (__file__, __path__, ...): absent, as for any stub
            raise AttributeError(name)
        return _Anything(name)

    def __call__(self, *args, **kwargs):
        return _Anything("call")

    def __mro_entries__(self, bases):  # `class ToolButton(gr.Button, ...)`: a fresh empty base each
        return (type(self.__name__, (), {}),)


def save_tokenizer(directory: Path) -> None:
    """A word-level fast tokenizer over the tiny vocabulary (the webui loads one with every model)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(TINY["vocab_size"])}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0").save_pretrained(directory)


def write_models(models_dir: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    for name, config in MODELS.items():
        directory = models_dir / name
        torch.manual_seed(0)
        plain = {k: v for k, v in config.items() if k != "rope_scaling"}
        LlamaForCausalLM(LlamaConfig(**plain)).save_pretrained(directory)
        (directory / "config.json").write_text(json.dumps(config))
        save_tokenizer(directory)


def copy_tree(runner: str, source: str, scratch: Path, patch: bool) -> Path:
    target = scratch / runner
    shutil.copytree(source, target)
    if patch:
        patching.apply(runner, target)
    return target


def main(mode: str, webui_source: str, exllama_source: str) -> None:
    if mode not in ("patch", "hook"):
        sys.exit(__doc__)
    scratch = Path(tempfile.mkdtemp(prefix="pntk-webui-smoke-"))
    webui = copy_tree("text-generation-webui", webui_source, scratch, patch=mode == "patch")
    exllama_package = copy_tree("exllama", exllama_source, scratch / "site", patch=mode == "patch")
    write_models(scratch / "models")
    if mode == "hook":
        from pntk.launch import install_hooks

        install_hooks()

    sys.modules["gradio"] = _Anything("gradio")
    sys.modules["exllama.cuda_ext"] = cuda_ext_stub("exllama.cuda_ext")
    sys.path[:0] = [str(webui), str(exllama_package.parent)]
    os.chdir(webui)
    sys.argv = ["server.py", "--cpu", "--model-dir", str(scratch / "models")]

    from modules.models_settings import get_model_metadata

    settings = get_model_metadata("tiny-pntk")
    assert (settings["max_seq_len"], settings["truncation_length"]) == (1024, 1024), settings
    print("  get_model_metadata: max_seq_len and truncation_length 1024 (the config's extended length)")

    from modules import models
    from modules import shared

    for name, method in (("tiny-pntk", "pntk"), ("tiny-yarn", "yarn")):
        model, tokenizer = models.load_model(name, "Transformers")
        rotaries = [layer.self_attn.rotary_emb for layer in model.model.layers]
        assert all(isinstance(r, pntk_tf.PntkRotaryEmbedding) and r.plan.method == method for r in rotaries)
        ids = tokenizer("w3 w5 w7 w9", return_tensors="pt").input_ids
        logits = model(input_ids=ids).logits
        assert torch.isfinite(logits).all()
        print(f"  load_model({name}, Transformers): pntk's {method} tables in every layer; "
              f"menu:{pntk_webui.menu_note()!r}")

    import exllama.model as exllama_model

    expected_status = pntk_exllama.PATCHED if mode == "patch" else pntk_exllama.HOOKED
    assert pntk_exllama.status(exllama_model) == expected_status, pntk_exllama.status(exllama_model)
    original_map = exllama_model.ExLlamaDeviceMap.__init__

    def cpu_map(self, num_layers):  # the webui loads ExLlama on cuda:0; here every layer is on the CPU
        original_map(self, num_layers)
        self.layers = ["cpu"] * num_layers
        self.norm = self.lm_head = "cpu"

    exllama_model.ExLlamaDeviceMap.__init__ = cpu_map
    gptq = write_tiny_gptq_model(scratch / "models" / "tiny-gptq", torch.Generator().manual_seed(0))
    save_tokenizer(gptq)
    shared.args.max_seq_len = 512
    hf = models.load_model(gptq.name, "ExLlama_HF")[0]
    assert hf.ex_model.sincos["cpu"][0].shape == (1, 1, 512, 128)
    print(f"  load_model(tiny-gptq, ExLlama_HF): exllama {exllama_model.__file__} ({expected_status}); "
          f"menu:{pntk_webui.menu_note()!r}")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
