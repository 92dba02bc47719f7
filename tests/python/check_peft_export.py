"""Checks a peft export of fedp2eft against the Rust model's outputs.

Usage: check_peft_export.py DIR, where DIR (written by core/tests/peft_export.rs) holds
  base/          the base model (save_hf_classifier): BertForSequenceClassification
  adapter/       the adapter (export_peft): adapter_config.json + adapter_model.safetensors
  expected.json  input_ids, attention_mask, Rust logits of the base and of the adapted model,
                 and the rank and scaling of every adapted module (module path -> value)
Loads base + adapter with transformers + peft (f32, CPU, eval mode) and checks that
  1. peft adapted exactly the expected modules, each with the expected rank and scaling
     (so heterogeneous ranks came through rank_pattern / alpha_pattern),
  2. peft's own state-dict keys equal the exported keys,
  3. base logits, adapter logits and merge_and_unload() logits match Rust within TOL.
Exits non-zero on any mismatch. Ran with torch 2.15.0, transformers 5.24.0, peft 0.21.2.
"""
import json
import os
import sys

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from transformers import BertForSequenceClassification

TOL = 1e-4


def max_abs(a, b):
    return (a - torch.tensor(b, dtype=torch.float32)).abs().max().item()


def main(root):
    with open(os.path.join(root, "expected.json")) as f:
        exp = json.load(f)
    adapter_dir = os.path.join(root, "adapter")
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    ids = torch.tensor(exp["input_ids"], dtype=torch.long)
    mask = torch.tensor(exp["attention_mask"], dtype=torch.long)
    errors = []

    model, info = BertForSequenceClassification.from_pretrained(
        os.path.join(root, "base"), output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(kind):
            errors.append(f"base checkpoint {kind}: {sorted(info[kind])[:5]}")
    model.eval()
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).logits
    d_base = max_abs(base, exp["base_logits"])
    print(f"base logits max-abs-diff {d_base:.3e}")
    if d_base > TOL:
        errors.append(f"base logits differ by {d_base:.3e}")

    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()

    built = {}
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.r:
            built[name] = (module.r["default"], module.scaling["default"])
    want = {m: (exp["ranks"][m], exp["scalings"][m]) for m in exp["ranks"]}
    if set(built) != set(want):
        errors.append(f"adapted modules differ: peft only {sorted(set(built) - set(want))}, "
                      f"expected only {sorted(set(want) - set(built))}")
    for m in sorted(set(built) & set(want)):
        (r, s), (wr, ws) = built[m], want[m]
        if r != wr or abs(s - ws) > 1e-9 * abs(ws):
            errors.append(f"{m}: peft built r={r} scaling={s}, expected r={wr} scaling={ws}")
        if r != cfg["rank_pattern"].get(m, cfg["r"]):
            errors.append(f"{m}: peft built r={r}, config rank_pattern says otherwise")
    ranks = sorted({r for r, _ in built.values()})
    print(f"peft built {len(built)} LoRA modules, ranks {ranks}")

    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as f:
        exported = set(f.keys())
    peft_keys = set(get_peft_model_state_dict(model).keys())
    if exported != peft_keys:
        errors.append(f"state-dict keys differ: exported only {sorted(exported - peft_keys)[:3]}, "
                      f"peft only {sorted(peft_keys - exported)[:3]}")

    with torch.no_grad():
        adapted = model(input_ids=ids, attention_mask=mask).logits
        merged_model = model.merge_and_unload()
        merged_model.eval()
        merged = merged_model(input_ids=ids, attention_mask=mask).logits
    d_adapted = max_abs(adapted, exp["logits"])
    d_merged = max_abs(merged, exp["logits"])
    d_effect = max_abs(base, exp["logits"])
    print(f"adapter logits max-abs-diff {d_adapted:.3e}")
    print(f"merged logits max-abs-diff {d_merged:.3e}")
    print(f"(adapter effect on logits: {d_effect:.3e})")
    for what, d in (("adapter", d_adapted), ("merged", d_merged)):
        if not d <= TOL:
            errors.append(f"{what} logits differ by {d:.3e} > {TOL}")

    for e in errors:
        print("MISMATCH:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
