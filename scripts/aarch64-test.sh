#!/usr/bin/env bash
# Cross-builds fedp2eft-core's tests for aarch64-unknown-linux-gnu and runs them under
# qemu-aarch64: the unit tests, core/tests/kernels.rs (the fused kernels against candle's composite
# ops; on aarch64 pulp takes its NEON path and gemm its aarch64 kernels, which is what this
# proves), fedp2eft-fpenv's tests and core/tests/runtime.rs (FPCR.FZ / FZ16 set on every compute
# thread and the caller's mode restored) and the other test files that need no Python reference.
#
#   scripts/aarch64-test.sh            unit tests + model-free test files (no downloads needed)
#   scripts/aarch64-test.sh --models   also the forward-pass tests that read the model cache
#                                      (`fedp2eft fetch` first; FEDP2EFT_HOME as for x86)
# Extra arguments after `--` go to the test binaries (e.g. `-- attention`).
# Environment: CARGO_TARGET_DIR (default target/cross, apart from the host builds' target/ so the
# two never wait on each other's lock).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
triple=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu

models=0
if [ "${1:-}" = "--models" ]; then models=1; shift; fi
[ "${1:-}" = "--" ] && shift

# Tools: the cross linker, the aarch64 glibc it links against (and qemu loads), qemu itself.
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -e "$sysroot/lib/libc.so.6" ] || missing+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing tools; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"

# Only this script's environment, no global cargo config: other builds stay native.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cross}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
# Optimise core too (dependencies already are, [profile.dev.package."*"]): the kernels' loops
# are only NEON-vectorised inside pulp's dispatch when optimised, and that is the code to test.
# Debug assertions and overflow checks stay on. Set to 0 for a build identical to the host's.
export CARGO_PROFILE_DEV_OPT_LEVEL=${CARGO_PROFILE_DEV_OPT_LEVEL:-3}

# Model-free test files. `client` builds the HTTP client so http_client.rs runs too.
tests=(--lib --test kernels --test adapter --test federated_wire --test http_client --test runtime)
if [ $models = 1 ]; then
  # Read ~/.cache/fedp2eft (same files as the host): model loading and forward passes, ~2 min
  # under qemu. Left out: personalize and stages, which train (personalize.rs alone ran for
  # 19 min under qemu without finishing), and peft_export and hf_pickle, which call the Python
  # reference stack (torch): nothing in those is specific to the CPU that kernels.rs and
  # minilm_parity.rs do not already cover.
  tests+=(--test minilm_parity --test bad_files --test e5s1 --test e5_forward --test data_emoji)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
status=0
# Test binaries run one after another; --no-fail-fast so one failure does not hide the others.
cargo test -p fedp2eft-fpenv --target "$triple" --no-fail-fast -- "$@" 2>&1 | tee "$log" || status=$?
cargo test -p fedp2eft-core --features client --target "$triple" --no-fail-fast "${tests[@]}" \
  -- "$@" 2>&1 | tee -a "$log" || status=$?

echo
echo "==> aarch64 summary ($triple under $(qemu-aarch64 --version | head -1 | cut -d' ' -f1-3))"
awk '/^ +Running /{ n = $2 } /^test result:/{ printf "  %-36s %s %s %s %s %s\n", n, $3, $4, $5, $6, $7 }' "$log"
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{ s += $1 } END { print s + 0 }')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{ s += $1 } END { print s + 0 }')
echo "  total: $passed passed, $failed failed, $((SECONDS - start)) s"
if [ "$status" != 0 ] || [ "$failed" != 0 ]; then
  echo "FAILED (cargo exit $status)" >&2
  exit 1
fi
