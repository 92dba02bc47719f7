#!/usr/bin/env bash
# Builds the Android side of fedp2eft-ffi (docs/mobile.md):
#   1. libfedp2eft_ffi.so per ABI, release, into android/fedp2eft/src/main/jniLibs/<abi>/;
#   2. the Kotlin binding from the pinned uniffi-bindgen into android/fedp2eft/src/generated/kotlin/.
# Linker, first that applies:
#   - ANDROID_NDK_HOME (or ANDROID_NDK_ROOT) set: cargo-ndk with the NDK's clang (the supported
#     path; `cargo install cargo-ndk`);
#   - else zig (`pip install ziglang`): its lld links against stub bionic libraries (empty
#     libc/libm/libdl/liblog.so that only give the library its NEEDED entries) and an LLVM
#     libunwind that zig compiles. No NDK needed, but nothing checks the library's symbols against
#     a real bionic: use it for CI and development, ship from the NDK path.
# Options:
#   --abis "A..."  ABIs to build (default: arm64-v8a x86_64 — phones and the emulator)
# Environment: FEDP2EFT_FFI_FEATURES (cargo features of fedp2eft-ffi; `tls` compiles C code and
#   needs the NDK path), ANDROID_PLATFORM (API level of the NDK path, default 26 = the module's
#   minSdk), CARGO_TARGET_DIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

abis="arm64-v8a x86_64"
while [ $# -gt 0 ]; do
  case "$1" in
    --abis) abis=${2:?--abis needs a list}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-android: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
  shift
done

target_dir=${CARGO_TARGET_DIR:-$root/target}
jni=android/fedp2eft/src/main/jniLibs
features=()
[ -n "${FEDP2EFT_FFI_FEATURES:-}" ] && features=(--features "$FEDP2EFT_FFI_FEATURES")
triple() {
  case "$1" in
    arm64-v8a) echo aarch64-linux-android ;;
    x86_64) echo x86_64-linux-android ;;
    *) echo "build-android: unsupported ABI $1 (arm64-v8a, x86_64)" >&2; exit 2 ;;
  esac
}
installed=$(rustup target list --installed)
for abi in $abis; do
  t=$(triple "$abi")
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

ndk=${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}
if [ -n "$ndk" ]; then
  command -v cargo-ndk >/dev/null || {
    echo "build-android: ANDROID_NDK_HOME is set but cargo-ndk is missing: cargo install cargo-ndk" >&2
    exit 1
  }
  export ANDROID_NDK_HOME=$ndk
  ndk_abis=()
  for abi in $abis; do ndk_abis+=(-t "$abi"); done
  cargo ndk "${ndk_abis[@]}" --platform "${ANDROID_PLATFORM:-26}" -o "$jni" \
    build --release -p fedp2eft-ffi ${features[@]+"${features[@]}"}
elif python3 -m ziglang version >/dev/null 2>&1; then
  zigdir="$target_dir/android-zig"
  zig_lib=$(python3 -c 'import os, ziglang; print(os.path.dirname(ziglang.__file__))')/lib
  mkdir -p "$zigdir"
  # rustc picks the linker's flavour from its name: a name ending in "ld" gets plain ld
  # arguments, which lld takes as they are. --as-needed is dropped or the empty stubs would
  # be too. 16 KB pages, which Android 15+ devices may use.
  cat >"$zigdir/zig-ld" <<'EOF'
#!/usr/bin/env bash
args=()
for a in "$@"; do [ "$a" = --as-needed ] || args+=("$a"); done
exec python3 -m ziglang ld.lld -L "$FEDP2EFT_ANDROID_SYSROOT" -z max-page-size=16384 "${args[@]}"
EOF
  chmod +x "$zigdir/zig-ld"
  for abi in $abis; do
    t=$(triple "$abi") arch=${t%%-*}
    sys="$zigdir/$arch"
    if [ ! -e "$sys/libunwind.a" ]; then
      echo "build-android: stub bionic + libunwind for $arch in $sys"
      rm -rf "$sys" && mkdir -p "$sys/obj"
      # Rust's std for Android links -lunwind statically (the NDK's LLVM libunwind); zig ships
      # its source. Compiled against musl's headers, whose few types it uses (dl_phdr_info,
      # pthread_rwlock_t, FILE*) match bionic's on 64-bit; errno is bionic's __errno().
      # Hidden symbols, as in the NDK's: each library keeps its own unwinder.
      u="$zig_lib/libunwind"
      for f in libunwind.cpp UnwindLevel1.c UnwindLevel1-gcc-ext.c UnwindRegistersRestore.S \
        UnwindRegistersSave.S; do
        case $f in
          *.cpp) lang=(-std=c++17 -fno-exceptions -fno-rtti -nostdinc++) ;;
          *.c) lang=(-std=c99) ;;
          *) lang=() ;;
        esac
        python3 -m ziglang cc -target "$arch-linux-musl" -c -O2 -fPIC -funwind-tables \
          -fvisibility=hidden -D_LIBUNWIND_HIDE_SYMBOLS -D_LIBUNWIND_IS_NATIVE_ONLY -DNDEBUG \
          -D__errno_location=__errno -I "$u/include" "${lang[@]}" "$u/src/$f" -o "$sys/obj/${f%.*}.o"
      done
      python3 -m ziglang ar rcs "$sys/libunwind.a" "$sys"/obj/*.o
      # Empty shared objects named like bionic's: the library gets NEEDED libc.so, libm.so,
      # libdl.so, liblog.so and its symbols resolve from the real ones on the device.
      echo >"$sys/obj/empty.c"
      python3 -m ziglang cc -target "$arch-linux-musl" -c -fPIC "$sys/obj/empty.c" -o "$sys/obj/empty.o"
      for l in c m dl log; do
        python3 -m ziglang ld.lld -shared -soname "lib$l.so" -o "$sys/lib$l.so" "$sys/obj/empty.o"
      done
    fi
    tu=$(echo "$t" | tr a-z- A-Z_)
    # Only the cdylib: the staticlib in the crate's type list would be archived for nothing.
    env "CARGO_TARGET_${tu}_LINKER=$zigdir/zig-ld" FEDP2EFT_ANDROID_SYSROOT="$sys" \
      cargo rustc --release -p fedp2eft-ffi --lib --crate-type cdylib --target "$t" \
      ${features[@]+"${features[@]}"}
    mkdir -p "$jni/$abi"
    cp "$target_dir/$t/release/libfedp2eft_ffi.so" "$jni/$abi/"
    # Strip the copy: without the NDK, AGP cannot. (The library in target/ keeps its symbol
    # table, which uniffi-bindgen reads; zig's objcopy cannot strip shared objects yet.)
    stripped=0
    for s in llvm-strip "$arch-linux-gnu-strip"; do
      if command -v "$s" >/dev/null; then "$s" "$jni/$abi/libfedp2eft_ffi.so" && stripped=1 && break; fi
    done
    [ $stripped = 1 ] || echo "build-android: no llvm-strip or $arch-linux-gnu-strip: $abi left unstripped" >&2
  done
else
  echo "build-android: no Android linker. Either install the NDK and cargo-ndk and set" \
    "ANDROID_NDK_HOME (see docs/mobile.md), or \`pip install ziglang\` for the NDK-less build." >&2
  exit 1
fi

# The binding, read by the pinned generator (built together with the host library, as the other
# ffi scripts do, so that all share one cached build) from the first ABI's unstripped library in
# target/: the metadata it reads is in the symbol table, which the copies in jniLibs have lost.
cargo build --release -p fedp2eft-ffi -p uniffi-bindgen -p fedp2eft-cli
first=$(triple "${abis%% *}")
out=android/fedp2eft/src/generated/kotlin
rm -rf "$out" && mkdir -p "$out"
"$target_dir/release/uniffi-bindgen" generate --no-format --language kotlin --out-dir "$out" \
  --library "$target_dir/$first/release/libfedp2eft_ffi.so"
echo "build-android: done"
ls -l "$jni"/*/libfedp2eft_ffi.so
find "$out" -name '*.kt'
