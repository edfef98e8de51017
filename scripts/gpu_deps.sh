#!/usr/bin/env bash
# Prepares build/deps for scripts/gpu_check.sh, whose GPU machine has no network and no
# nlohmann-json package: the nlohmann/json headers, wheels of the test dependencies (pytest,
# numpy, transformers and theirs) for CPython 3.12 on x86-64 Linux. Run it where
# the package registry is reachable, then carry build/deps to the GPU machine.
#   PNTK_GPU_PYTHON=3.12   the GPU machine's Python version
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
  -d "$deps/wheels" pytest numpy "transformers>=5"

du -sh "$deps"
