#!/usr/bin/env bash
# Builds fedp2eft-ffi (release), generates its Python binding with the pinned uniffi-bindgen and
# runs ffi/tests/python against the Linux library. Needs `fedp2eft fetch` (MiniLM + emoji data)
# and a Python with pytest ($FEDP2EFT_PY, else .venv-ref from scripts/reference/setup-venv.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
py=${FEDP2EFT_PY:-$root/.venv-ref/bin/python}
cargo build --release -p fedp2eft-ffi -p uniffi-bindgen -p fedp2eft-cli
out="$target/bindings/python"
rm -rf "$out" && mkdir -p "$out"
"$target/release/uniffi-bindgen" generate --library "$target/release/libfedp2eft_ffi.so" \
  --language python --no-format --out-dir "$out"
cp "$target/release/libfedp2eft_ffi.so" "$out/"
home=${FEDP2EFT_HOME:-$HOME/.cache/fedp2eft}
export FEDP2EFT_BINDINGS="$out"
export FEDP2EFT_MINILM="$home/models/all-MiniLM-L6-v2"
export FEDP2EFT_CLI="$target/release/fedp2eft"
"$py" -m pytest -q ffi/tests/python "$@"
