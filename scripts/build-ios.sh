#!/usr/bin/env bash
# Builds the iOS side of fedp2eft-ffi (docs/mobile.md):
#   1. libfedp2eft_ffi.a for the device (aarch64-apple-ios) and the simulator
#      (aarch64-apple-ios-sim, x86_64-apple-ios), release;
#   2. the Swift binding from the pinned uniffi-bindgen: FedP2EFT.swift into
#      ios/Sources/FedP2EFT/Generated/, the C header + module.modulemap (module fedp2eft_ffiFFI)
#      into target/ios/headers/;
#   3. lipo of the two simulator archives, then ios/FedP2EFTFFI.xcframework (xcodebuild).
# Needs macOS with Xcode and `rustup target add aarch64-apple-ios aarch64-apple-ios-sim
# x86_64-apple-ios`.
# Options:
#   --no-xcframework  stop after step 2 (no lipo, no xcodebuild): works on Linux too
#   --targets "T..."  build only these targets (default: the three above)
# Environment: FEDP2EFT_FFI_FEATURES (cargo features of fedp2eft-ffi, e.g. `tls`, which compiles
# C code with Xcode's clang), IPHONEOS_DEPLOYMENT_TARGET (default 15.0), CARGO_TARGET_DIR.
set -euo pipefail
# (Arrays are expanded as ${a[@]+"${a[@]}"}: macOS's bash 3.2 treats an empty "${a[@]}" as unset.)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

xcframework=1
targets="aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-xcframework) xcframework=0 ;;
    --targets) targets=${2:?--targets needs a list}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-ios: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$xcframework" = 1 ]; then
  for tool in lipo xcodebuild; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "build-ios: \`$tool\` not found: the XCFramework needs macOS with Xcode" \
        "(install Xcode, then xcode-select -s /Applications/Xcode.app). Without it, pass --no-xcframework." >&2
      exit 1
    }
  done
fi
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup target list --installed)
  for t in $targets; do
    grep -qx "$t" <<<"$installed" || {
      echo "build-ios: the Rust standard library for $t is missing: rustup target add $t" >&2
      exit 1
    }
  done
fi

target_dir=${CARGO_TARGET_DIR:-$root/target}
export IPHONEOS_DEPLOYMENT_TARGET=${IPHONEOS_DEPLOYMENT_TARGET:-15.0}
features=()
[ -n "${FEDP2EFT_FFI_FEATURES:-}" ] && features=(--features "$FEDP2EFT_FFI_FEATURES")

# 1. Static libraries only: the cdylib of the crate's crate-type list would need Apple's linker.
for t in $targets; do
  echo "build-ios: libfedp2eft_ffi.a for $t"
  cargo rustc --release -p fedp2eft-ffi --lib --crate-type staticlib --target "$t" \
    ${features[@]+"${features[@]}"}
done

# 2. The binding, read from the first target's archive by the pinned generator (built together
# with the host library, as the ffi test scripts do, so that both share one cached build).
cargo build --release -p fedp2eft-ffi -p uniffi-bindgen -p fedp2eft-cli
out="$target_dir/ios"
rm -rf "$out" && mkdir -p "$out/bindings" "$out/headers"
first=${targets%% *}
"$target_dir/release/uniffi-bindgen" generate --no-format --language swift \
  --library "$target_dir/$first/release/libfedp2eft_ffi.a" --out-dir "$out/bindings"
cp "$out/bindings/fedp2eft_ffiFFI.h" "$out/headers/"
# An XCFramework's Headers/ exposes a C module through a file named module.modulemap.
cp "$out/bindings/fedp2eft_ffiFFI.modulemap" "$out/headers/module.modulemap"
generated=ios/Sources/FedP2EFT/Generated
rm -rf "$generated" && mkdir -p "$generated"
cp "$out/bindings/FedP2EFT.swift" "$generated/"

if [ "$xcframework" = 0 ]; then
  echo "build-ios: --no-xcframework: stopping before lipo and xcodebuild. Produced:"
  for t in $targets; do ls -l "$target_dir/$t/release/libfedp2eft_ffi.a"; done
  ls -l "$out/headers" "$generated"
  exit 0
fi

# 3. One archive per platform (lipo joins the simulator's two architectures), then the XCFramework.
device=() sim=()
for t in $targets; do
  case "$t" in
    aarch64-apple-ios) device=(-library "$target_dir/$t/release/libfedp2eft_ffi.a" -headers "$out/headers") ;;
    *-apple-ios-sim | x86_64-apple-ios) sim+=("$target_dir/$t/release/libfedp2eft_ffi.a") ;;
    *) echo "build-ios: $t is not an iOS target" >&2; exit 2 ;;
  esac
done
libraries=(${device[@]+"${device[@]}"})
if [ ${#sim[@]} -gt 0 ]; then
  mkdir -p "$out/simulator"
  lipo -create "${sim[@]}" -output "$out/simulator/libfedp2eft_ffi.a"
  libraries+=(-library "$out/simulator/libfedp2eft_ffi.a" -headers "$out/headers")
fi
rm -rf ios/FedP2EFTFFI.xcframework
xcodebuild -create-xcframework "${libraries[@]}" -output ios/FedP2EFTFFI.xcframework
echo "build-ios: ios/FedP2EFTFFI.xcframework and $generated/FedP2EFT.swift are ready"
