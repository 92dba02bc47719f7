#!/usr/bin/env bash
# Release static libraries (.a) of fedp2eft-ffi for the phone targets. Only the staticlib is
# built (`cargo rustc --crate-type staticlib`): the cdylib's final link needs the Android NDK or
# Xcode, a static library needs neither, so this runs on any Linux machine. What it proves: every
# crate compiles for every phone target (with the default features all are pure Rust; no C
# compiler is involved). Packaging is scripts/build-android.sh's and scripts/build-ios.sh's job.
#
#   scripts/build-mobile-libs.sh                   all five targets below
#   scripts/build-mobile-libs.sh aarch64-linux-android x86_64-linux-android
# Environment: CARGO_TARGET_DIR (default target/cross, apart from the host builds' target/);
#   FEDP2EFT_FFI_FEATURES  extra cargo features, e.g. fedp2eft-core/client
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cross}

targets=("$@")
if [ ${#targets[@]} = 0 ]; then
  targets=(aarch64-linux-android x86_64-linux-android
    aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
fi
features=()
[ -n "${FEDP2EFT_FFI_FEATURES:-}" ] && features=(--features "$FEDP2EFT_FFI_FEATURES")

installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

for t in "${targets[@]}"; do
  printf '\n==> %s\n' "$t"
  cargo rustc --release -p fedp2eft-ffi --lib --crate-type staticlib --target "$t" \
    ${features[@]+"${features[@]}"}
done

printf '\n==> static libraries\n'
for t in "${targets[@]}"; do
  a="$CARGO_TARGET_DIR/$t/release/libfedp2eft_ffi.a"
  printf '  %-24s %6s MB  %s\n' "$t" "$(($(stat -c %s "$a") / 1000000))" "$a"
done
