#!/usr/bin/env bash
# Transformers 4.33 (the line text-generation-webui 1.6.1 pins) in a virtualenv of its own, beside
# the suite's Transformers 5, and the legacy integration tests (rotary embeddings per layer, the
# QuantLinear swap) run in it:
#   scripts/make_tf433_env.sh [VENV_DIR] [PYTEST ARGS...]     (VENV_DIR default: build/venv-tf433)
# The venv sees the packages of the `python` that has pntk installed (scripts/setup.sh) behind its
# own, so it reuses that build of pntk and shadows only Transformers and its hub/tokenizer pins.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-build/venv-tf433}"
shift || true

python -c "import pntk" 2>/dev/null || { echo "make_tf433_env: run scripts/setup.sh first (pntk is not importable)" >&2; exit 2; }
main_site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
python -m venv --system-site-packages "$venv"
venv_site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$main_site')" > "$venv_site/pntk_main_env.pth"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  "transformers==4.33.3" "tokenizers==0.13.3" "huggingface_hub==0.17.3"
"$venv/bin/python" -c "import transformers, pntk; print('transformers', transformers.__version__, '/ pntk', pntk.__version__)"
"$venv/bin/python" -m pytest tests/test_integration_transformers_legacy.py tests/test_integration_q4.py -p no:cacheprovider "$@"
