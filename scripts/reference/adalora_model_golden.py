"""Golden trace of peft's AdaLoRA fine-tuning a real model, for core's AdaLoRA method test.

all-MiniLM-L6-v2 with a 4-label head whose weights follow a formula (both sides compute it), every
Linear adapted (the 36 encoder linears, the pooler and the classifier, as core adapts them),
AdaLoRA as the authors configure it (init_r 3 = 1.5 × target_r 2, lora_alpha 8, orth_reg_weight
0.1, β1 = β2 = 0.85, deltaT 1, tinit / tfinal = int(10 % / 30 %) of the 6 steps), A and B set from
a formula instead of peft's N(0, 0.02) draw, E zero. Six AdamW steps (lr 1e-3, clipping 1.0) on
one batch of all 12 examples, dropout off; after every step `update_and_allocate(global_step)`
with HF Trainer's 0-based step, as the authors' `AdaLoRA_Callback` calls it. Written to
core/tests/golden/adalora_model.json: the token ids, every step's loss and E of every module,
the final rank pattern.

Usage: .venv-ref/bin/python scripts/reference/adalora_model_golden.py
"""
import json
import math
import os

import peft
import torch
from peft import AdaLoraConfig, get_peft_model
from tokenizers import Tokenizer
from transformers import BertForSequenceClassification

HOME = os.environ.get("FEDP2EFT_HOME", os.path.expanduser("~/.cache/fedp2eft"))
MODEL = os.path.join(HOME, "models", "all-MiniLM-L6-v2")
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "core", "tests", "golden", "adalora_model.json")
LABELS, STEPS, MAX_LEN = 4, 6, 24
TEXTS = [
    ("The striker scored twice in the second half.", 0),
    ("Parliament passed the budget after a long debate.", 1),
    ("A new vaccine trial begins in three hospitals.", 2),
    ("The band announced a world tour for next summer.", 3),
    ("Fans cheered as the team lifted the trophy.", 0),
    ("The minister resigned over the housing scandal.", 1),
    ("Doctors warn about the rise of malaria cases.", 2),
    ("Her debut film won the festival's top prize.", 3),
    ("The coach was sacked after five straight defeats.", 0),
    ("Voters queued for hours at the polling stations.", 1),
    ("The clinic offers free screening for diabetes.", 2),
    ("The singer's new album tops the charts.", 3),
]


def head(o, i, hidden):  # classifier weight, both sides
    return 0.02 * math.sin(0.37 * (o * hidden + i) + 0.5)


def init_a(layer, i, j):
    return 0.02 * math.sin(1.3 * layer + 0.7 * i + 0.011 * j)


def init_b(layer, o, i):
    return 0.02 * math.cos(0.9 * layer + 0.5 * i + 0.013 * o)


torch.manual_seed(0)
tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
tok.no_padding()
tok.enable_truncation(MAX_LEN)
ids = [tok.encode(t).ids for t, _ in TEXTS]
labels = torch.tensor([l for _, l in TEXTS])
width = max(len(x) for x in ids)
input_ids = torch.tensor([x + [0] * (width - len(x)) for x in ids])
mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])

model = BertForSequenceClassification.from_pretrained(MODEL, num_labels=LABELS)
hidden = model.config.hidden_size
with torch.no_grad():
    w = torch.tensor([[head(o, i, hidden) for i in range(hidden)] for o in range(LABELS)])
    model.classifier.weight.copy_(w)
    model.classifier.bias.zero_()
names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
cfg = AdaLoraConfig(init_r=3, target_r=2, lora_alpha=8, lora_dropout=0.0, orth_reg_weight=0.1,
                    beta1=0.85, beta2=0.85, deltaT=1, total_step=STEPS, tinit=int(0.1 * STEPS),
                    tfinal=int(0.3 * STEPS), target_modules=names)
model = get_peft_model(model, cfg)
model.eval()  # no dropout; gradients still flow
mods = {n: m for n, m in model.named_modules() if hasattr(m, "lora_E") and "default" in m.lora_E}
order = [n for n in mods if n.split("base_model.model.", 1)[1] in names]
assert len(order) == len(names), (len(order), len(names))
with torch.no_grad():
    for l, n in enumerate(order):
        a, b = mods[n].lora_A["default"], mods[n].lora_B["default"]
        a.copy_(torch.tensor([[init_a(l, i, j) for j in range(a.shape[1])] for i in range(a.shape[0])]))
        b.copy_(torch.tensor([[init_b(l, o, i) for i in range(b.shape[1])] for o in range(b.shape[0])]))
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
steps = []
for step in range(STEPS):
    # AdaLoraModel.forward adds the orthogonal regulariser (PeftModel without a task type
    # would call the transformers model directly and skip it).
    out = model.base_model(input_ids=input_ids, attention_mask=mask,
                token_type_ids=torch.zeros_like(input_ids), labels=labels)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    model.base_model.update_and_allocate(step)
    opt.zero_grad()
    steps.append({
        "loss": out.loss.item(),
        "e": [mods[n].lora_E["default"].detach().flatten().tolist() for n in order],
    })
pattern = model.peft_config["default"].rank_pattern
ranks = [int(sum(pattern[k])) for n in order
         for k in pattern if k.startswith(n.split("base_model.model.", 1)[1] + ".")]
assert len(ranks) == len(order), (len(ranks), len(order))
with open(OUT, "w") as f:
    json.dump({
        "source": f"peft {peft.__version__}, torch {torch.__version__}, {os.path.basename(MODEL)}",
        "modules": [n.split("base_model.model.", 1)[1] for n in order],
        "ids": ids,
        "labels": labels.tolist(),
        "labels_count": LABELS,
        "steps": steps,
        "final_ranks": ranks,
    }, f)
print("wrote", os.path.normpath(OUT), "final ranks", ranks)
