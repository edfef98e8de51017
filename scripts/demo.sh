#!/usr/bin/env bash
# README command one: set up a fresh machine (scripts/setup.sh), then run the main job on the
# built-in long-context GPTQ model, on the CPU: `pntk demo` (arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec pntk demo "$@"
