#!/usr/bin/env bash
# Everything a fresh machine needs to build and run pntk: system packages (apt), Python
# packages, then the extension itself (editable install, so tests see the source tree).
#   PNTK_CUDA=AUTO|ON|OFF        build the CUDA kernels (AUTO: when nvcc is found)
#   PNTK_CUDA_ARCHS="75;80;..."  CUDA architectures (default: 75;80;86;89;90, and 100;120 with CUDA >= 12.8)
#   PNTK_BUILD_TESTS=ON          also build the C++ unit tests (ctest, in build/dev)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -f /usr/include/nlohmann/json.hpp ] || missing+=(nlohmann-json3-dev)
[ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "pntk setup: installing ${missing[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ -z "${CMAKE_CUDA_COMPILER:-}" ] && ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc
fi

python -m pip install -q --disable-pip-version-check "torch==2.13.0"
python -m pip install -q --disable-pip-version-check \
  numpy safetensors "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja \
  pytest "transformers>=5" "jsonschema>=4.18" "gguf>=0.19" \
  sentencepiece protobuf matplotlib
# auto-gptq's packer checks pntk's GPTQ loader against third-party packing code (tests only);
# --no-deps: its own dependencies (accelerate, peft, CUDA wheels) are not needed for that.
python -m pip install -q --disable-pip-version-check --no-deps --only-binary=auto-gptq "auto-gptq==0.7.1"
# PyPI's exllama 0.1.0 (pure Python, its CUDA code is built only on import of cuda_ext): the
# integration tests run its real ExLlamaConfig and ExLlama loading. --no-deps: it pins old
# safetensors and ninja.
python -m pip install -q --disable-pip-version-check --no-deps "exllama==0.1.0"

python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e . \
  -Cbuild-dir=build/dev \
  -Ccmake.define.PNTK_CUDA="${PNTK_CUDA:-AUTO}" \
  -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="${PNTK_CUDA_ARCHS:-}" \
  -Ccmake.define.PNTK_BUILD_TESTS="${PNTK_BUILD_TESTS:-OFF}"
python -c "import pntk; print('pntk', pntk.__version__, 'built:', pntk.build_info())"
