"""PyTorch + peft reference of `fedp2eft personalize` (core/src/personalize.rs), for the
speed/memory comparison of `fedp2eft bench --vs-reference` (workload `personalize`).

It does, on the same weights, PSG and token ids as the Rust side, in f32 on CPU, no dropout:
  accuracy before -> features (per adapted Linear: mean and sqrt(unbiased var + 1e-5) of its
  input over every scalar element, padding included, train set in batches of 4) -> PSG λ̂ ->
  global top-(r·L) pruning -> peft LoRA with heterogeneous ranks (rank_pattern, scaling kept at
  alpha / r_max via alpha_pattern) and the kept λ frozen on the rank bottleneck (a forward hook
  on lora_A) -> fine-tune (CE, AdamW on A/B, clip 1.0, seeded shuffle) -> fold λ into B and
  merge_and_unload -> accuracy after.
Model loading is reported as load_seconds; timings.total_s counts everything after it.
Structure_s includes building the adapted model, as the Rust side's does.

`python personalize_ref.py JOB.json` checks instead that the merged model's logits equal the
unmerged adapted model's (λ hooks on) and that the plan keeps exactly budget·L ranks.
"""
import json
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification


def load_model(job):
    cfg = AutoConfig.from_pretrained(job["model_dir"])
    cfg.num_labels = job["labels"]
    cfg.hidden_dropout_prob = 0.0
    cfg.attention_probs_dropout_prob = 0.0
    cfg.classifier_dropout = 0.0
    model = AutoModelForSequenceClassification.from_pretrained(
        job["model_dir"], config=cfg, dtype=torch.float32
    )
    return model.eval()


def pad(rows, pad_id):
    """Right-pad a list of id lists to the longest; returns (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def evaluate(model, data, batch, pad_id):
    order = sorted(range(len(data)), key=lambda i: len(data[i]["ids"]))
    correct = 0
    model.eval()
    with torch.no_grad():
        for s in range(0, len(order), batch):
            rows = [data[i] for i in order[s : s + batch]]
            ids, mask = pad([r["ids"] for r in rows], pad_id)
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            correct += int((pred == torch.tensor([r["label"] for r in rows])).sum())
    return {"correct": correct, "total": len(data)}


def adapted_names(model):
    """The adapted Linear modules in module order: 6 per encoder layer, pooler, classifier."""
    names = []
    for i in range(model.config.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        names += [p + s for s in ("attention.self.query", "attention.self.key",
                                  "attention.self.value", "attention.output.dense",
                                  "intermediate.dense", "output.dense")]
    return names + ["bert.pooler.dense", "classifier"]


def features(model, names, train, pad_id):
    """Interleaved (mean, sd) of each adapted module's input; Chan merge in float64."""
    stats = [[0, 0.0, 0.0] for _ in names]  # count, mean, M2

    def hook_for(k):
        def hook(_module, inp):
            v, m = torch.var_mean(inp[0], correction=0)
            n_b, m_b, m2_b = inp[0].numel(), float(m), float(v) * inp[0].numel()
            n, mean, m2 = stats[k]
            tot = n + n_b
            d = m_b - mean
            stats[k] = [tot, mean + d * n_b / tot, m2 + m2_b + d * d * n * n_b / tot]
        return hook

    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_pre_hook(hook_for(k)) for k, n in enumerate(names)]
    with torch.no_grad():
        for s in range(0, len(train), 4):
            ids, mask = pad([r["ids"] for r in train[s : s + 4]], pad_id)
            model(input_ids=ids, attention_mask=mask)
    for h in handles:
        h.remove()
    out = []
    for n, mean, m2 in stats:
        out += [mean, (m2 / (n - 1) + 1e-5) ** 0.5]
    return torch.tensor(out, dtype=torch.float32)


def psg_predict(path, x):
    w = load_file(path)
    h = torch.nn.functional.linear(x, w["fc1.weight"], w["fc1.bias"])
    h = torch.relu(h) - w["prelu.weight"] * torch.relu(-h)
    return torch.nn.functional.linear(h, w["fc2.weight"], w["fc2.bias"]).clamp(1e-4, 1000.0)


def prune(lam, n_layers, r_max, budget):
    """Global top-(budget·L); ties go to the lower flat index, as core/src/prune.rs does."""
    top = torch.sort(lam, descending=True, stable=True).indices[: budget * n_layers]
    top = top.sort().values.tolist()
    keep = [[] for _ in range(n_layers)]
    for i in top:
        keep[i // r_max].append(i % r_max)
    return keep


def build_adapted(model, names, keep, lam, job):
    """peft LoRA on the layers that keep ranks; λ (frozen) scales the rank bottleneck."""
    r_max, alpha = job["r_max"], job["lora_alpha"]
    targets = {n: len(k) for n, k in zip(names, keep) if k}
    cfg = LoraConfig(
        r=r_max, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets),
        rank_pattern=dict(targets),
        alpha_pattern={n: alpha * c / r_max for n, c in targets.items()},
    )
    torch.manual_seed(job["seed"])
    peft_model = get_peft_model(model, cfg)
    mods = dict(peft_model.base_model.model.named_modules())
    lora = []
    for l, (n, k) in enumerate(zip(names, keep)):
        if not k:
            continue
        a = mods[n].lora_A["default"]
        a.register_buffer("bt_lambda", lam[[l * r_max + j for j in k]].clone())
        handle = a.register_forward_hook(lambda m, _inp, out: out * m.bt_lambda)
        lora.append((mods[n], handle))
    return peft_model, lora


def finetune(model, train, job, pad_id):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=job["lr"], weight_decay=0.0)
    gen = torch.Generator().manual_seed(job["seed"])
    bs, steps = job["batch_size"], 0
    model.train()
    for _ in range(job["epochs"]):
        order = torch.randperm(len(train), generator=gen).tolist()
        for s in range(0, len(order), bs):
            rows = [train[i] for i in order[s : s + bs]]
            ids, mask = pad([r["ids"] for r in rows], pad_id)
            labels = torch.tensor([r["label"] for r in rows])
            loss = torch.nn.functional.cross_entropy(
                model(input_ids=ids, attention_mask=mask).logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            steps += 1
    model.eval()
    return steps


def merge(peft_model, lora):
    """Fold λ into B's columns, drop the hooks, then peft's merge_and_unload."""
    with torch.no_grad():
        for mod, handle in lora:
            a = mod.lora_A["default"]
            mod.lora_B["default"].weight.mul_(a.bt_lambda)
            handle.remove()
    return peft_model.merge_and_unload()


def plan(model, job, pad_id):
    names = adapted_names(model)
    t = time.perf_counter()
    x = features(model, names, job["train"], pad_id)
    t_feat = time.perf_counter() - t
    lam = psg_predict(job["psg"], x)
    if lam.numel() != len(names) * job["r_max"]:
        raise ValueError(f"PSG gives {lam.numel()} values, L·r_max = {len(names)}·{job['r_max']}")
    keep = prune(lam, len(names), job["r_max"], job["budget"])
    return names, lam, keep, t_feat


def run_personalize(job):
    t0 = time.perf_counter()
    model = load_model(job)
    pad_id = model.config.pad_token_id
    load_s = time.perf_counter() - t0
    tm = {}
    start = time.perf_counter()

    t = time.perf_counter()
    before = evaluate(model, job["test"], job["eval_batch"], pad_id)
    tm["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    names, lam, keep, tm["features_s"] = plan(model, job, pad_id)
    peft_model, lora = build_adapted(model, names, keep, lam, job)
    tm["structure_s"] = time.perf_counter() - t - tm["features_s"]

    t = time.perf_counter()
    steps = finetune(peft_model, job["train"], job, pad_id)
    tm["finetune_s"] = time.perf_counter() - t

    t = time.perf_counter()
    merged = merge(peft_model, lora)
    tm["merge_s"] = time.perf_counter() - t

    t = time.perf_counter()
    after = evaluate(merged, job["test"], job["eval_batch"], pad_id)
    tm["evaluate_s"] += time.perf_counter() - t
    tm["total_s"] = time.perf_counter() - start

    ranks = [len(k) for k in keep]
    stages = ("features_s", "structure_s", "finetune_s", "merge_s", "evaluate_s", "total_s")
    return {
        "workload": "personalize", "load_seconds": load_s,
        "timings": {k: tm[k] for k in stages},
        "accuracy_before": before, "accuracy_after": after,
        "ranks": ranks, "total_rank": sum(ranks), "steps": steps,
        "train_examples": len(job["train"]),
        "train_tokens": sum(len(r["ids"]) for r in job["train"]),
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "flush_subnormals": bool(job.get("flush_subnormals", False)),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def check_merge(job):
    """Merged logits == adapted logits (λ hooks on) within 1e-4, with B made non-zero."""
    model = load_model(job)
    pad_id = model.config.pad_token_id
    names, lam, keep, _ = plan(model, job, pad_id)
    assert sum(len(k) for k in keep) == job["budget"] * len(names), "total_rank != budget·L"
    peft_model, lora = build_adapted(model, names, keep, lam, job)
    for mod, _ in lora:  # heterogeneous ranks, scaling kept at alpha / r_max
        assert abs(mod.scaling["default"] - job["lora_alpha"] / job["r_max"]) < 1e-12
    assert [m.r["default"] for m, _ in lora] == [len(k) for k in keep if k]
    finetune(peft_model, job["train"], job, pad_id)
    torch.manual_seed(0)
    with torch.no_grad():  # fine-tuning moves B by ~1e-4: add noise so the check bites
        for mod, _ in lora:
            mod.lora_B["default"].weight.add_(torch.randn_like(mod.lora_B["default"].weight) * 0.05)
    ids, mask = pad([r["ids"] for r in job["test"][: job["eval_batch"]]], pad_id)
    with torch.no_grad():
        adapted = peft_model(input_ids=ids, attention_mask=mask).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=ids, attention_mask=mask).logits
        merged = merge(peft_model, lora)(input_ids=ids, attention_mask=mask).logits
    diff = float((merged - adapted).abs().max())
    print(json.dumps({"max_abs_diff_merged_vs_adapted": diff,
                      "max_abs_diff_adapted_vs_base": float((adapted - base).abs().max()),
                      "total_rank": sum(len(k) for k in keep), "budget_x_L": job["budget"] * len(names),
                      "adapted_layers": len(lora)}))
    assert diff < 1e-4, diff
    return diff


if __name__ == "__main__":
    check_merge(json.load(open(sys.argv[1])))
