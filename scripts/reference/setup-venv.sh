#!/usr/bin/env bash
# Creates .venv-ref with the Python reference stack (torch CPU use, transformers, peft) from PyPI.
# PyPI's torch wheel pulls its CUDA libraries as dependencies; they are only loaded, never used.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${FEDP2EFT_REF_VENV:-$root/.venv-ref}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check \
  torch==2.15.0 transformers==5.24.0 peft==0.21.2 safetensors==0.8.0 numpy pytest
"$venv/bin/python" -c "import torch, transformers, peft; print('reference venv:', torch.__version__, transformers.__version__, peft.__version__)"
