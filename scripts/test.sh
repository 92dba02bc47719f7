#!/usr/bin/env bash
# The one test command: exactly what CI runs (`.ci/run` installs the tooling, then calls this).
# Cheapest checks first. Environment:
#   FEDP2EFT_HOME   cache folder of models and data (default ~/.cache/fedp2eft)
#   FEDP2EFT_PY     python of the reference venv (default .venv-ref/bin/python when present)
#   FEDP2EFT_TEST_DATABASE_URL  PostgreSQL for the server tests (default: scripts/postgres-test.sh
#                   starts a throwaway cluster and this script exports its URL)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
step() { printf '\n==> %s  [%ds]\n' "$*" "$SECONDS"; }

step "format"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p fedp2eft-core --features client --all-targets -- -D warnings
step "release build of the CLI, the FFI library and its binding generator"
# One build for all three: built apart, cargo resolves other features for shared dependencies
# and recompiles them (minutes on 2 cores) in the binding scripts below.
cargo build --release -p fedp2eft-cli -p fedp2eft-ffi -p uniffi-bindgen
step "fetch models and data (skips what is present)"
"$target/release/fedp2eft" fetch
if [ -z "${FEDP2EFT_PY:-}" ]; then
  step "Python reference venv (torch, transformers, peft) for the PEFT reload test"
  scripts/reference/setup-venv.sh
  export FEDP2EFT_PY="${FEDP2EFT_REF_VENV:-$root/.venv-ref}/bin/python"
fi
if [ -z "${FEDP2EFT_TEST_DATABASE_URL:-}" ]; then
  step "PostgreSQL for the server tests (scripts/postgres-test.sh)"
  FEDP2EFT_TEST_DATABASE_URL=$(scripts/postgres-test.sh)
  export FEDP2EFT_TEST_DATABASE_URL
fi
# In release: the tests then reuse the dependencies the release build above compiled (the dev
# profile would compile them all again at opt-level 3), and the numeric tests run optimised.
step "tests"
cargo test --workspace --release
step "Python binding of fedp2eft-ffi (scripts/ffi-python-test.sh)"
scripts/ffi-python-test.sh
step "Kotlin binding of fedp2eft-ffi (scripts/ffi-kotlin-test.sh)"
scripts/ffi-kotlin-test.sh
step "Swift binding of fedp2eft-ffi generates (compiled only where Swift exists: scripts/build-ios.sh)"
rm -rf "$target/bindings/swift"
"$target/release/uniffi-bindgen" generate --no-format --library "$target/release/libfedp2eft_ffi.so" \
  --language swift --out-dir "$target/bindings/swift"
for f in FedP2EFT.swift fedp2eft_ffiFFI.h fedp2eft_ffiFFI.modulemap; do
  test -s "$target/bindings/swift/$f" || { echo "no $f generated" >&2; exit 1; }
done
if command -v swiftc >/dev/null 2>&1; then
  swiftc -parse "$target/bindings/swift/FedP2EFT.swift"
fi
step "done"
