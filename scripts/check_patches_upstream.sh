#!/usr/bin/env bash
# Developer check of patches/ against local checkouts of the pinned upstream revisions (CI never
# sees them; this script fetches nothing). Each target is copied to a temporary directory, never
# edited in place. For every target it proves, with the installed `pntk`:
#   check says "not applied" -> apply -> every patched file py_compiles -> check says "applied"
#   -> a second apply says "already applied" -> revert restores the tree byte for byte (diff -r)
#   -> the same patch files give the same bytes with `git apply` and with `patch -p1`.
# For ExLlama it also imports the patched model.py (its CUDA extension stubbed), runs the patched
# ExLlamaConfig on the built-in airophin config and loads a tiny GPTQ model on the CPU.
# With --webui-python (and --webui, --exllama-pip), scripts/webui_upstream_smoke.py then runs the
# webui's own loaders with that Python, patched and with the runtime hook.
#
#   scripts/check_patches_upstream.sh [--exllama DIR] [--exllama-pip DIR] [--webui DIR] [--webui-python PY]
#     --exllama DIR      a turboderp/exllama checkout at 3b013cd (the directory holding model.py)
#     --exllama-pip DIR  the `exllama` package directory of jllllll/exllama 0.0.17 (holds model.py)
#     --webui DIR        an oobabooga/text-generation-webui checkout at tag 1.6.1 (019371c0)
#     --webui-python PY  a Python with pntk, transformers 4.33, accelerate, sentencepiece, PyYAML
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
declare -a targets=()
webui_python="" webui_source="" exllama_pip_source=""
while [ $# -gt 0 ]; do
  case "$1" in
    --exllama) targets+=("exllama:$2"); shift 2 ;;
    --exllama-pip) targets+=("exllama:$2"); exllama_pip_source="$2"; shift 2 ;;
    --webui) targets+=("text-generation-webui:$2"); webui_source="$2"; shift 2 ;;
    --webui-python) webui_python="$2"; shift 2 ;;
    *) echo "check_patches_upstream: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || { sed -n '2,20p' "$0" >&2; exit 2; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failures=0

patched_files() {  # the paths of the layout that matched, one per line
  python - "$1" "$2" <<'EOF'
import sys
from pntk import patching
state = patching.inspect_target(sys.argv[1], sys.argv[2])
print("\n".join(entry.path for entry in state.layout.files))
EOF
}

exllama_smoke() {  # the patched model.py for real on the CPU: CUDA extension stubbed, tiny GPTQ model
  PNTK_QUIET=1 python - "$1" "$repo/tests" "$scratch" <<'EOF'
import importlib.util, pathlib, sys, types
import torch
directory, tests, scratch = sys.argv[1:]
sys.path.insert(0, tests)
from exllama_cpu import cuda_ext_stub, load_on_cpu, write_tiny_gptq_model
from pntk import RopePlan
from pntk.examples import example_path
from pntk.integrations import exllama
stub = cuda_ext_stub("exllama.cuda_ext")
package = types.ModuleType("exllama")
package.__path__ = [directory]
sys.modules.update({"cuda_ext": stub, "exllama": package, "exllama.cuda_ext": stub})
spec = importlib.util.spec_from_file_location("exllama.model", f"{directory}/model.py")
model_py = importlib.util.module_from_spec(spec)
sys.modules["exllama.model"] = model_py
spec.loader.exec_module(model_py)
assert exllama.status(model_py) == exllama.PATCHED, exllama.status(model_py)
config = model_py.ExLlamaConfig(f"{example_path('airophin')}/config.json")
config.alpha_value = 2.0
config.calculate_rotary_embedding_base()
plan = exllama.plan_for(config)
assert (config.max_seq_len, plan.method, plan.factor, plan.alpha_value) == (16384, "pntk", 4, 2.0), plan.describe()
print(f"    patched ExLlamaConfig: max_seq_len {config.max_seq_len}; {plan.describe()}")
tiny = write_tiny_gptq_model(pathlib.Path(scratch) / "tiny-gptq", torch.Generator().manual_seed(0))
model = load_on_cpu(model_py, tiny, max_seq_len=96)
cos, sin = RopePlan.from_config(tiny).tables(96, dtype=torch.float16)
assert all(torch.equal(l.self_attn.sin[0, 0], sin) and torch.equal(l.self_attn.cos[0, 0], cos) for l in model.layers)
cache = model_py.ExLlamaCache(model)
try:
    model.forward(torch.ones(1, 100, dtype=torch.long), cache)
    raise AssertionError("a position past the tables was not refused")
except ValueError as exc:
    assert "positions up to 99 requested" in str(exc), exc
print("    patched ExLlama on the CPU: pntk tables in every layer; position 99 of 96 refused")
EOF
}

for entry in "${targets[@]}"; do
  runner="${entry%%:*}" source="${entry#*:}"
  name="$(basename "$source")"
  echo "== $runner: $source"
  work="$scratch/$runner-$name" && rm -rf "$work" && mkdir -p "$work"
  cp -a "$source" "$work/original" && cp -a "$source" "$work/tree"
  (
    set -e
    pntk patch check --runner "$runner" --target "$work/tree" | sed -n 1p | grep -q ": not applied$"
    pntk patch apply --runner "$runner" --target "$work/tree"
    mapfile -t files < <(patched_files "$runner" "$work/tree")
    for file in "${files[@]}"; do python -m py_compile "$work/tree/$file"; echo "    py_compile $file: ok"; done
    pntk patch check --runner "$runner" --target "$work/tree" | sed -n 1p | grep -q ": applied$"
    pntk patch apply --runner "$runner" --target "$work/tree" | grep -q "already applied$"
    if [ "$runner" = exllama ]; then exllama_smoke "$work/tree"; fi
    for tool in "git apply" "patch -p1 -s"; do
      rm -rf "$work/other" && cp -a "$source" "$work/other"
      for file in "${files[@]}"; do
        patch_file="$(python -c "from pntk import patching; m = patching.load_manifest('$runner'); print(next(e.patch_file for l in m.layouts for e in l.files if e.path == '$file'))")"
        (cd "$work/other" && $tool < "$patch_file")
      done
      for file in "${files[@]}"; do cmp -s "$work/tree/$file" "$work/other/$file"; done
      echo "    $tool: same bytes as pntk patch apply"
    done
    find "$work/tree" -name __pycache__ -prune -exec rm -rf {} +
    pntk patch revert --runner "$runner" --target "$work/tree"
    diff -r "$work/original" "$work/tree" >/dev/null
    echo "    revert: tree identical to the original"
  ) && echo "   PASS $runner $source" || { echo "   FAIL $runner $source"; failures=$((failures + 1)); }
done
if [ -n "$webui_python" ]; then
  [ -n "$webui_source" ] && [ -n "$exllama_pip_source" ] || { echo "--webui-python needs --webui and --exllama-pip" >&2; exit 2; }
  for mode in patch hook; do
    echo "== text-generation-webui loaders ($mode): $webui_source with $webui_python"
    if "$webui_python" "$repo/scripts/webui_upstream_smoke.py" "$mode" "$webui_source" "$exllama_pip_source" \
        > "$scratch/smoke.log" 2>&1; then
      grep -E "^  (get_model_metadata|load_model)" "$scratch/smoke.log"; echo "   PASS webui loaders ($mode)"
    else
      tail -20 "$scratch/smoke.log"; echo "   FAIL webui loaders ($mode)"; failures=$((failures + 1))
    fi
  done
fi
exit $(( failures > 0 ? 1 : 0 ))
