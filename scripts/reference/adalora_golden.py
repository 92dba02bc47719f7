"""Golden trace of peft's AdaLoRA rank allocator for core's allocator test.

Two adapted modules (init_r 6, target_r 2 → budgets 12 → 4) with seeded random A, E, B values
and gradients at every step; peft's `RankAllocator.update_and_allocate` smooths the sensitivity
|p·∇p| and its uncertainty (EMA β1, β2), follows the cubic budget schedule (tinit, tfinal,
deltaT over total_step) and masks the least important singular values of E. Written to
core/tests/golden/adalora.json: every step's inputs, then the budget, whether it masked, the
rank pattern and E after masking.

Usage: .venv-ref/bin/python scripts/reference/adalora_golden.py
"""
import json
import os

import peft
import torch
from peft import AdaLoraConfig
from peft.tuners.adalora.layer import RankAllocator

SHAPES = [(6, 5, 4), (6, 4, 7)]  # (r, in, out) per module
TOTAL, TINIT, TFINAL, DELTA_T = 16, 2, 3, 2


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for i, (r, d_in, d_out) in enumerate(SHAPES):
            m = torch.nn.Module()
            m.lora_A = torch.nn.ParameterDict({"default": torch.nn.Parameter(torch.zeros(r, d_in))})
            m.lora_E = torch.nn.ParameterDict({"default": torch.nn.Parameter(torch.zeros(r, 1))})
            m.lora_B = torch.nn.ParameterDict({"default": torch.nn.Parameter(torch.zeros(d_out, r))})
            self.add_module(f"m{i}", m)


cfg = AdaLoraConfig(init_r=6, target_r=2, tinit=TINIT, tfinal=TFINAL, deltaT=DELTA_T,
                    beta1=0.85, beta2=0.85, total_step=TOTAL, target_modules=["x"])
model = Toy()
alloc = RankAllocator(model, cfg, "default")
gen = torch.Generator().manual_seed(7)
steps = []
for step in range(1, TOTAL + 1):
    inputs = []
    for i in range(len(SHAPES)):
        mod = getattr(model, f"m{i}")
        entry = {}
        for name in ["lora_A", "lora_E", "lora_B"]:
            p = getattr(mod, name)["default"]
            with torch.no_grad():  # what an optimiser step would have left (E too)
                p.copy_(torch.randn(p.shape, generator=gen))
            p.grad = torch.randn(p.shape, generator=gen)
            entry[name] = {"value": p.detach().flatten().tolist(), "grad": p.grad.flatten().tolist()}
        inputs.append(entry)
    _, mask_ind = alloc.budget_schedule(step)
    budget, pattern = alloc.update_and_allocate(model, step)
    steps.append({
        "step": step,
        "inputs": inputs,
        "budget": budget,
        "masked": bool(mask_ind),
        "rank_pattern": None if pattern is None else [pattern[f"m{i}.lora_E.default"] for i in range(len(SHAPES))],
        "e_after": [getattr(model, f"m{i}").lora_E["default"].detach().flatten().tolist() for i in range(len(SHAPES))],
    })
out = os.path.join(os.path.dirname(__file__), "..", "..", "core", "tests", "golden", "adalora.json")
with open(out, "w") as f:
    json.dump({"reference": {"script": "scripts/reference/adalora_golden.py", "peft": peft.__version__,
                             "torch": torch.__version__},
               "config": {"shapes": SHAPES, "total_step": TOTAL, "tinit": TINIT, "tfinal": TFINAL,
                          "delta_t": DELTA_T, "beta1": 0.85, "beta2": 0.85, "init_r": 6, "target_r": 2},
               "steps": steps}, f)
print("wrote", out)
