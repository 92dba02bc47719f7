"""The reference side of `fedp2eft bench --vs-reference`: the same workloads on PyTorch + peft.

One workload per process (so that its peak RSS is its own), on the weights, token ids and thread
count that the Rust side hands over in a JSON job file, printing one JSON line like the Rust
bench worker. Workloads:
  forward       base model, eval mode, no grad, 16 x 128 tokens
  lora-step     peft LoRA r=8 (alpha 16) on every linear, CE, backward, AdamW, clip 1.0
  bt-lora-step  peft LoRA r=32 (alpha 64) on every linear with a trainable lambda per rank
                (a forward hook on lora_A scales the rank bottleneck, as BT-LoRA does), CE plus
                the Laplace/Gamma priors, backward, AdamW (A/B 1e-4, lambda 1e-2), clip A/B 1.0
  personalize   the whole pipeline on one client (see personalize_ref.py)
Dropout is off everywhere (the Rust side applies none), so both sides compute the same graph.

Usage: .venv-ref/bin/python scripts/reference/bench_reference.py JOB.json WORKLOAD
"""
import json
import resource
import sys
import time


def rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return None


def load_model(job):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(job["model_dir"])
    cfg.num_labels = job["labels"]
    cfg.hidden_dropout_prob = 0.0
    cfg.attention_probs_dropout_prob = 0.0
    cfg.classifier_dropout = 0.0
    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(
        job["model_dir"], config=cfg, dtype=torch.float32, ignore_mismatched_sizes=True
    )
    return model


def batch_tensors(job):
    import torch

    ids = torch.tensor(job["ids"], dtype=torch.long)
    mask = torch.ones_like(ids)
    labels = torch.tensor(job["labels_of_rows"], dtype=torch.long)
    return ids, mask, labels


def attach_lora(model, r, bt_lora):
    """peft LoRA on every linear; with `bt_lora`, a trainable lambda per rank (init 1e-4)."""
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(model, cfg)
    lambdas, terms = [], []
    if bt_lora:
        for module in model.modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                lam = torch.nn.Parameter(torch.full((r,), 1e-4))
                a = module.lora_A["default"]
                a.register_parameter("bt_lambda", lam)
                a.register_forward_hook(lambda m, inp, out: out * m.bt_lambda)
                b = module.lora_B["default"]
                # B0 for the Laplace prior; B starts at zero, as in peft.
                terms.append((b.weight, b.weight.detach().clone(), lam))
                lambdas.append(lam)
    return model, lambdas, terms


def prior_loss(terms, n):
    """The BayesTune priors of core/src/adapter/priors.rs (authors' defaults)."""
    import torch

    sig, sp = 0.0, 0.0
    for b, b0, lam in terms:
        lc = lam + (lam.clamp(1e-4, 1000.0) - lam).detach()
        sig = sig + ((b - b0).abs() / lc).sum()
        sp = sp + (lc * 100.0 + lc.log()).sum()
    return sig * (100.0 / n) + sp * (0.01 / n)


def make_step(model, lambdas, terms, n):
    import torch

    lam_ids = {id(p) for p in lambdas}
    ab = [p for p in model.parameters() if p.requires_grad and id(p) not in lam_ids]
    groups = [{"params": ab, "lr": 1e-4}]
    if lambdas:
        groups.append({"params": lambdas, "lr": 1e-2})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)

    def step(ids, mask, labels):
        out = model(input_ids=ids, attention_mask=mask)
        loss = torch.nn.functional.cross_entropy(out.logits, labels)
        if terms:
            loss = loss + prior_loss(terms, n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ab, 1.0)
        opt.step()
        return float(loss)

    return step


def main():
    job = json.load(open(sys.argv[1]))
    workload = sys.argv[2]
    import torch

    # The same subnormal mode as ours, set before the intra-op pool starts (threads inherit it).
    if job.get("flush_subnormals", False) and not torch.set_flush_denormal(True):
        raise SystemExit("torch cannot flush subnormals on this CPU, ours does")
    torch.set_num_threads(job["threads"])
    if workload == "personalize":
        from personalize_ref import run_personalize

        print(json.dumps(run_personalize(job)))
        return
    t0 = time.perf_counter()
    model = load_model(job)
    ids, mask, labels = batch_tensors(job)
    if workload == "forward":
        model.eval()

        def one():
            with torch.no_grad():
                return float(model(input_ids=ids, attention_mask=mask).logits.sum())

    else:
        r = 8 if workload == "lora-step" else job["r_max"]
        model, lambdas, terms = attach_lora(model, r, workload == "bt-lora-step")
        model.train()
        step = make_step(model, lambdas, terms, len(job["ids"]))

        def one():
            return step(ids, mask, labels)

    load_seconds = time.perf_counter() - t0
    rss_after_load = rss_kb("VmRSS:")
    t = time.perf_counter()
    one()
    warmup = time.perf_counter() - t
    times = []
    for _ in range(job["iters"]):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            {
                "workload": workload,
                "load_seconds": load_seconds,
                "warmup_seconds": warmup,
                "times_seconds": times,
                "tokens": int(mask.sum()),
                "rss_after_load_kb": rss_after_load,
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "flush_subnormals": bool(job.get("flush_subnormals", False)),
                # The kernels torch dispatches to ("AVX512", "AVX2", ...), beside ours.
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            }
        )
    )


if __name__ == "__main__":
    main()
