"""Train the built-in tiny model once and write it to python/pntk/data/tiny_llama/.

Run rarely (a few minutes of CPU), on purpose:  nice python scripts/train_tiny_model.py
Needs torch, transformers, sentencepiece and protobuf (for tokenizer.json).

Like airophin, trained at the original length with plain RoPE, then briefly fine-tuned at 4x the
length with pntk scaling (the plan from config.json). The data (pntk.tiny_model.corpus) are
corpus documents and copy drills; the stages:
  1. copy drills only, plain RoPE, until copying works (the model learns to attend a fixed
     distance back: abruptly, after a plateau);
  2. the corpus with a quarter of drills, plain RoPE, at the original length;
  3. the same mix at 4x the length with pntk scaling.
Writes the fp16 weights, config.json, the tokenizer files and training.json (how they were
made, with the float model's perplexity table), each through a temporary file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import pntk
from pntk import perplexity
from pntk.integrations import transformers as pntk_transformers
from pntk.tiny_model import ARCHITECTURE, EXTENDED_LENGTH, FLOAT_MODEL_DIR, ORIGINAL_LENGTH, corpus, model_config
from pntk.tiny_model.tokenizer import train_sentencepiece, write_transformers_files

TORCH_SEED = 4
BATCH_TOKENS = 4096
DRILL_SPAN_WORDS = 64
COPIED_LOSS = 0.5  # nats per copied drill token: the drill stage ends once the mean is below


@dataclass
class Stage:
    name: str
    context: int
    rope: str  # method of perplexity.rope_config: "none" or "pntk"
    rope_factor: Optional[float]  # None: the config's (4); 1: plain RoPE at the original length
    steps: int  # the drill stage: at most this many
    learning_rate: float
    drill_fraction: float


STAGES = (
    Stage("copy drills", ORIGINAL_LENGTH, "none", 1.0, steps=600, learning_rate=3e-3, drill_fraction=1.0),
    Stage("corpus, plain RoPE", ORIGINAL_LENGTH, "none", 1.0, steps=300, learning_rate=3e-3, drill_fraction=0.25),
    Stage("extend x4, pntk", EXTENDED_LENGTH, "pntk", None, steps=120, learning_rate=1e-3, drill_fraction=0.25),
)


def write_atomic(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def batch(rng, sp, stage: Stage, size: int) -> torch.Tensor:
    rows = []
    for i in range(size):
        if i < round(size * stage.drill_fraction):
            text = corpus.copy_drill(rng, DRILL_SPAN_WORDS, stage.context)
        else:
            text = corpus.document(rng, stage.context)
        ids = [sp.bos_id()] + sp.encode(text)
        assert len(ids) >= stage.context, "a training document is shorter than the context"
        rows.append(ids[: stage.context])
    return torch.tensor(rows)


def train_stage(model, config: dict, stage: Stage, rng, sp, log) -> dict:
    plan = pntk.RopePlan.from_config(perplexity.rope_config(config, stage.rope, stage.rope_factor))
    pntk_transformers.apply(model, plan=plan, announce=False)
    log(f"stage {stage.name}: {plan.describe()}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    size = BATCH_TOKENS // stage.context
    warmup = 30
    drills_only = stage.drill_fraction == 1.0
    # Drill loss once copying works: the first span costs ln(lexicon) a word, the rest COPIED_LOSS.
    first = DRILL_SPAN_WORDS / stage.context
    copied = first * math.log(len(corpus.LEXICON)) + (1 - first) * COPIED_LOSS
    losses, started = [], time.time()
    for step in range(stage.steps):
        # Linear warm-up, then cosine decay to a tenth (the drill stage keeps its rate).
        decay = 1.0 if drills_only else 0.55 + 0.45 * math.cos(math.pi * step / stage.steps)
        for group in optimizer.param_groups:
            group["lr"] = stage.learning_rate * min(1.0, (step + 1) / warmup) * decay
        input_ids = batch(rng, sp, stage, size)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 25 == 0:
            log(f"  step {step:4d}  loss {losses[-1]:.3f}  {time.time() - started:6.1f} s")
        if drills_only and step >= warmup and np.mean(losses[-10:]) < copied:
            break
    return {**asdict(stage), "steps_run": len(losses), "final_loss": float(np.mean(losses[-10:])),
            "seconds": round(time.time() - started, 1), "plan": plan.describe()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FLOAT_MODEL_DIR)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(TORCH_SEED)
    log = lambda text: print(text, flush=True)  # noqa: E731
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    import sentencepiece
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    rng = np.random.default_rng(corpus.TOKENIZER_SEED)
    text = [sentence for _ in range(300) for sentence in corpus.sentences(rng, 150)]
    write_atomic(out / "tokenizer.model", train_sentencepiece(text, ARCHITECTURE["vocab_size"]))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert sp.vocab_size() == ARCHITECTURE["vocab_size"], sp.vocab_size()
    write_transformers_files(out)

    config = model_config()
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "rope_scaling"}))
    rng = np.random.default_rng(corpus.TRAINING_SEED)
    stages = [train_stage(model, config, stage, rng, sp, log) for stage in STAGES]
    model.eval()

    documents = perplexity.builtin_corpus(sp.encode, sp.bos_id(), EXTENDED_LENGTH, 16)
    contexts = perplexity.default_contexts(config)
    table = {}
    for method, plan in perplexity.method_plans(config).items():
        pntk_transformers.apply(model, plan=plan, announce=False)
        table[method] = {c: round(perplexity.truncated(model, documents, c), 3) for c in contexts}
    log(perplexity.format_table(table, marked="pntk"))

    tensors = {name: t.detach().to(torch.float16).contiguous() for name, t in model.state_dict().items()
               if "rotary_emb" not in name}
    handle, temporary = tempfile.mkstemp(dir=out, prefix=".model.safetensors.")
    os.close(handle)
    save_file(tensors, temporary, metadata={"format": "pt"})
    os.chmod(temporary, 0o644)
    os.replace(temporary, out / "model.safetensors")
    write_atomic(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    record = {
        "made_by": "scripts/train_tiny_model.py",
        "git_commit_before": commit.stdout.strip() or None,
        "seeds": {"torch": TORCH_SEED, "tokenizer_corpus": corpus.TOKENIZER_SEED,
                  "training_corpus": corpus.TRAINING_SEED, "evaluation_corpus": corpus.EVALUATION_SEED},
        "parameters": sum(t.numel() for t in tensors.values()),
        "batch_tokens": BATCH_TOKENS,
        "optimizer": "AdamW betas (0.9, 0.98), weight decay 0.01, gradient clip 1.0, warm-up 30 steps",
        "stages": stages,
        "perplexity": {"protocol": perplexity.PROTOCOLS["truncated"], "documents": len(documents),
                       "float_model": table},
        "seconds": round(time.time() - started, 1),
        "threads": args.threads,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "pntk": pntk.__version__, "sentencepiece": sentencepiece.__version__},
    }
    write_atomic(out / "training.json", (json.dumps(record, indent=2) + "\n").encode())
    log(f"wrote {out} in {record['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
