"""Golden value and gradients of peft's AdaLoRA orthogonal regulariser (AdaLoraModel.forward:
mean over every lora_A and lora_B of ‖P Pᵀ − I‖_F for A, ‖Pᵀ P − I‖_F for B) on seeded random
matrices of two layers, for core/tests/adalora_orth.rs → core/tests/golden/adalora_orth.json.

Usage: .venv-ref/bin/python scripts/reference/adalora_orth_golden.py
"""
import json
import os

import torch

gen = torch.Generator().manual_seed(11)
layers = []
params = []
for r, d_in, d_out in [(4, 6, 5), (3, 5, 7)]:
    a = (0.5 * torch.randn(r, d_in, generator=gen)).requires_grad_()
    b = (0.5 * torch.randn(d_out, r, generator=gen)).requires_grad_()
    layers.append((a, b))
    params += [("lora_A", a), ("lora_B", b)]
# The loop of peft/tuners/adalora/model.py, AdaLoraModel.forward.
regu_loss, num_param = 0, 0
for n, p in params:
    para_cov = p @ p.T if "lora_A" in n else p.T @ p
    I = torch.eye(*para_cov.size(), out=torch.empty_like(para_cov))  # noqa: E741
    num_param += 1
    regu_loss += torch.norm(para_cov - I, p="fro")
regu_loss = regu_loss / num_param
regu_loss.backward()
out = os.path.join(os.path.dirname(__file__), "..", "..", "core", "tests", "golden", "adalora_orth.json")
with open(out, "w") as f:
    json.dump({"reference": {"script": "scripts/reference/adalora_orth_golden.py", "torch": torch.__version__},
               "loss": regu_loss.item(),
               "layers": [{"a": a.detach().tolist(), "b": b.detach().tolist(),
                           "grad_a": a.grad.tolist(), "grad_b": b.grad.tolist()} for a, b in layers]}, f)
print("wrote", out, regu_loss.item())
