#!/usr/bin/env bash
# The main job on the embedded default (multilingual-e5-small + the emoji benchmark), end to end:
#  1. fetch the model and data, build, train the base model's head on the seen pool (once; cached);
#  2. personalize one real client at budget r = 4 from a BT-LoRA-learned λ: test accuracy
#     before/after and the per-layer rank map;
#  3. the federated experiment over loopback HTTP (`fedp2eft simulate`): an aggregation server,
#     4 seen-pool clients (English, Hindi) training the PSG for 2 rounds, then FedP²EFT vs LoRA on
#     seen and unseen clients for r ∈ {2, 4, 8, 16}.
# Environment: FEDP2EFT_HOME (cache folder), CLIENT (default seen-hi-0), BUDGET (default 4),
# OUT (default out/), SIMULATE=0 to skip step 3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
client=${CLIENT:-seen-hi-0}
budget=${BUDGET:-4}
out=${OUT:-out}
cargo build --release -p fedp2eft-cli
bin=${CARGO_TARGET_DIR:-$root/target}/release/fedp2eft
"$bin" fetch
home=${FEDP2EFT_HOME:-$HOME/.cache/fedp2eft}
if [ ! -f "$home/bases/e5-emoji/fedp2eft.json" ]; then
  "$bin" train-base
fi
"$bin" personalize --budget "$budget" --method bt-lora --client "$client" --out "$out/$client-r$budget"
if [ "${SIMULATE:-1}" != 0 ]; then
  "$bin" simulate --out "$out/simulate"
fi
