#!/usr/bin/env bash
# Prepares build/deps for scripts/gpu_check.sh, whose GPU machine has no network and no
# nlohmann-json package: the nlohmann/json headers, wheels of the test dependencies (pytest,
# numpy, transformers and theirs) and of ninja for CPython 3.12 on x86-64 Linux, and ExLlama
# v1's extension source (turboderp/exllama @ 3b013cd) for the benchmark's comparison. Run it
# where there is network, then carry build/deps to the GPU machine (about 46 MB).
#   PNTK_GPU_PYTHON=3.12   the GPU machine's Python version
#   EXLLAMA_GIT=<repo>     a local clone (or bare mirror) of turboderp/exllama; else GitHub
set -euo pipefail
cd "$(dirname "$0")/.."
deps=build/deps
mkdir -p "$deps/include" "$deps/wheels"
json=$(python3 - <<'PY'
import os
for root in ("/usr/include", "/usr/local/include"):
    if os.path.isfile(os.path.join(root, "nlohmann", "json.hpp")):
        print(os.path.join(root, "nlohmann"))
        break
PY
)
[ -n "$json" ] || { echo "gpu_deps: error: nlohmann/json.hpp not found (apt-get install nlohmann-json3-dev)" >&2; exit 2; }
rm -rf "$deps/include/nlohmann"
cp -r "$json" "$deps/include/nlohmann"
python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
  --python-version "${PNTK_GPU_PYTHON:-3.12}" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$deps/wheels" pytest numpy "transformers>=5" ninja

# ExLlama v1's extension source at the pinned revision (only exllama_ext/, fetched code that
# stays in the ignored build/ folder).
exllama_revision=3b013cd
rm -rf "$deps/exllama" && mkdir -p "$deps/exllama"
if [ -z "${EXLLAMA_GIT:-}" ]; then
  EXLLAMA_GIT=build/exllama.git  # outside build/deps: not carried
  [ -d "$EXLLAMA_GIT" ] || git clone -q --bare https://github.com/turboderp/exllama "$EXLLAMA_GIT" ||
    echo "gpu_deps: warning: cannot clone turboderp/exllama; the benchmark will not compare with it" >&2
fi
if [ -d "$EXLLAMA_GIT" ]; then
  git --git-dir "$EXLLAMA_GIT" archive "$exllama_revision" exllama_ext | tar -x -C "$deps/exllama"
fi
du -sh "$deps"
