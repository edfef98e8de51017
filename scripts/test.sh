#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, build (with the C++ tests), ctest, pytest, the
# other CPUs under qemu (scripts/test_cpus.sh: x86-64-v1..v3, aarch64 cross-built), and the
# Transformers 4.33 integration tests in their own virtualenv (the line webui 1.6.1 pins).
# CUDA code is compiled whenever nvcc is present (one architecture here, to save time: set
# PNTK_CUDA_ARCHS to change it); CUDA tests run only where a GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
export PNTK_BUILD_TESTS=ON
export PNTK_CUDA_ARCHS="${PNTK_CUDA_ARCHS:-80}"
bash scripts/setup.sh
ctest --test-dir build/dev --output-on-failure -j2
python -m pytest tests "$@"
bash scripts/test_cpus.sh
bash scripts/make_tf433_env.sh build/venv-tf433 -q
