#!/usr/bin/env bash
# Load benchmark of the federation server (a benchmark, not a test; not in CI): builds the
# release `fedp2eft-server` and `server/examples/load.rs`, then runs N concurrent clients
# (default 1000, all selected in round 0) uploading PSG-sized updates to the real binary over
# loopback HTTP. Writes bench/results/server-load-<date>.json and regenerates
# bench/results/server-load.md from every such file. Arguments go to the benchmark:
#   --clients N (1000)  --concurrency C (all at once)  --seed S (0)  --out PATH
#   --server-log PATH (keep the server's log)  --help
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -p fedp2eft-server --bin fedp2eft-server --example load

# Each in-flight request holds a socket in the benchmark and one in the server (a process
# each): 1000 clients need more than the common soft limit of 1024 open files.
soft=$(ulimit -Sn)
hard=$(ulimit -Hn)
if [ "$soft" != unlimited ] && [ "$soft" -lt 65536 ]; then
  if [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ]; then
    ulimit -Sn 65536
  else
    ulimit -Sn "$hard"
  fi
fi
echo "open-file limit: $(ulimit -Sn)"

out=()
case " $* " in
  *" --out "* | *" --out="*) ;;
  *) out=(--out "bench/results/server-load-$(date -u +%F).json") ;;
esac
exec "$target/release/examples/load" --server-bin "$target/release/fedp2eft-server" \
  "${out[@]}" "$@"
