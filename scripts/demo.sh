#!/usr/bin/env bash
# The main job on the embedded default (multilingual-e5-small + the emoji benchmark), end to end:
# fetch the model and data, build, train the base model's head on the seen pool (once; cached),
# then personalize one real client at budget r = 4 from a BT-LoRA-learned λ and print the test
# accuracy before/after and the per-layer rank map. Environment: FEDP2EFT_HOME (cache folder),
# CLIENT (default seen-hi-0), BUDGET (default 4), OUT (default out/<client>-r<budget>).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
client=${CLIENT:-seen-hi-0}
budget=${BUDGET:-4}
out=${OUT:-out/$client-r$budget}
cargo build --release -p fedp2eft-cli
bin=${CARGO_TARGET_DIR:-$root/target}/release/fedp2eft
"$bin" fetch
home=${FEDP2EFT_HOME:-$HOME/.cache/fedp2eft}
if [ ! -f "$home/bases/e5-emoji/fedp2eft.json" ]; then
  "$bin" train-base
fi
"$bin" personalize --budget "$budget" --bt-lora --client "$client" --out "$out"
