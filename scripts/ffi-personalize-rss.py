"""Peak memory of `personalize` through the Python binding, on the embedded default: the e5-small
base from `fedp2eft train-base` (bases/e5-emoji), the client seen-hi-0, budget r = 4, the paper's
fine-tune settings, optionally a PSG (e.g. psg-round-2.safetensors from `fedp2eft simulate`).
Prints one JSON object: the process's peak RSS (getrusage, whole Python process), the peak the
library reports, and RSS after loading. Run in a fresh process (peak RSS never goes down):
  FEDP2EFT_BINDINGS=target/bindings/python python3 scripts/ffi-personalize-rss.py [--psg FILE]
(scripts/ffi-python-test.sh generates the binding first)."""
import argparse
import json
import os
import resource
import sys
import time


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def main():
    home = os.environ.get("FEDP2EFT_HOME", os.path.expanduser("~/.cache/fedp2eft"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=os.path.join(home, "bases", "e5-emoji"))
    ap.add_argument("--psg", default=None)
    ap.add_argument("--client", default="seen-hi-0")
    ap.add_argument("--budget", type=int, default=4)
    a = ap.parse_args()
    sys.path.insert(0, os.environ["FEDP2EFT_BINDINGS"])
    import fedp2eft_ffi as fx

    before = rss_mb()
    t0 = time.time()
    p = fx.Personalizer(a.base, a.psg)
    data = fx.emoji_benchmark_client(a.client)
    p.set_examples(data.train, data.test)
    loaded = rss_mb()
    report = p.personalize(a.budget, fx.PersonalizeOptions(), None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "base": a.base, "psg": a.psg, "client": a.client, "budget": a.budget,
        "layers": p.num_layers(), "train": len(data.train), "test": len(data.test),
        "rss_python_mb": round(before, 1), "rss_loaded_mb": round(loaded, 1),
        "peak_rss_process_mb": round(peak, 1),
        "peak_rss_reported_mb": round((report.peak_rss_bytes or 0) / 2**20, 1),
        "accuracy_before": report.accuracy_before, "accuracy_after": report.accuracy_after,
        "total_rank": report.total_rank, "train_steps": report.train_steps,
        "personalize_s": round(report.seconds, 2), "wall_s": round(time.time() - t0, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
