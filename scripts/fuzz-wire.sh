#!/usr/bin/env bash
# Fuzz the wire crate's payload decoders (target `decode_upload`) for a bounded time.
# Not part of CI: it needs a nightly toolchain and cargo-fuzz, which it installs if missing.
# Environment:
#   FUZZ_SECONDS   how long to fuzz (default 60)
#   FUZZ_JOBS      parallel fuzzing processes (default 1)
# Findings are written to wire/fuzz/artifacts/decode_upload/; the script fails if any.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}

# The repository pins a stable toolchain; libFuzzer's sanitizer flags need nightly.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

corpus=wire/fuzz/corpus/decode_upload
mkdir -p "$corpus"
cargo run --quiet -p fedp2eft-wire --example fuzz_seeds -- "$corpus"

# libFuzzer's -jobs mode sends output to fuzz-N.log files: only use it for several jobs.
parallel=()
if [ "$jobs" -gt 1 ]; then parallel=(-jobs="$jobs" -workers="$jobs"); fi
cd wire
# -rss_limit_mb: a decoder that allocates from a hostile length field fails here.
cargo +nightly fuzz run decode_upload -- \
  -max_total_time="$secs" -rss_limit_mb=1024 -max_len=65536 "${parallel[@]}"
echo "fuzzed decode_upload for ${secs}s without a finding (corpus: $corpus)"
