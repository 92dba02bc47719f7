#!/usr/bin/env bash
# Builds fedp2eft-ffi (release), generates its Kotlin binding with the pinned uniffi-bindgen and
# runs the JUnit tests of ffi/tests/kotlin (Maven, JNA) against the Linux library. Needs
# `fedp2eft fetch` (MiniLM + emoji data), a JDK 17+ and Maven (Debian: default-jdk-headless
# maven); the first run downloads Kotlin, JNA, coroutines and JUnit from Maven Central.
# Extra arguments go to mvn, e.g. -Dtest='PersonalizerTest#typedErrors'.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "ffi-kotlin-test: \`$tool\` is missing: install a JDK 17+ and Maven" \
      "(apt-get install default-jdk-headless maven)" >&2
    exit 1
  }
done
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -p fedp2eft-ffi -p uniffi-bindgen -p fedp2eft-cli
out="$target/bindings/kotlin"
rm -rf "$out" && mkdir -p "$out"
# --no-format: ktlint is not installed and formatting is irrelevant to the tests.
"$target/release/uniffi-bindgen" generate --no-format --library "$target/release/libfedp2eft_ffi.so" \
  --language kotlin --out-dir "$out"
home=${FEDP2EFT_HOME:-$HOME/.cache/fedp2eft}
reports=ffi/tests/kotlin/target/surefire-reports
rm -rf "$reports"
mvn -B -q -f ffi/tests/kotlin/pom.xml test \
  -Dbindings.dir="$out" -Dlib.dir="$target/release" -Dfedp2eft.home="$home" "$@"
# -q hides Surefire's "Tests run:" line (failures are still printed): sum up its XML reports.
# (Debian's Maven still writes colour resets without a newline: start a fresh line first.)
echo
cat "$reports"/TEST-*.xml | awk '
  /<testsuite / {
    for (i = 1; i <= NF; i++) if (split($i, kv, "=") == 2) { gsub(/[">]/, "", kv[2]); n[kv[1]] += kv[2] }
  }
  END {
    if (n["tests"] == 0) { print "ffi-kotlin-test: no test ran" > "/dev/stderr"; exit 1 }
    printf "kotlin: %d passed, %d failed, %d skipped\n",
      n["tests"] - n["failures"] - n["errors"] - n["skipped"], n["failures"] + n["errors"], n["skipped"]
  }'
