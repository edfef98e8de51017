#!/usr/bin/env bash
# README command one: set up everything on a fresh machine, then run the main job on the built-in
# airophin-style model config.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pntk inspect --example airophin
