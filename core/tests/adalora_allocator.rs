//! AdaLoRA's rank allocator against HF peft's `RankAllocator` on the same values and gradients
//! (`tests/golden/adalora.json`, scripts/reference/adalora_golden.py): the same budget and
//! masking decision at every step, the same surviving triplets, the same E after masking.
mod goldens;

use candle_core::{Device, Tensor};
use fedp2eft_core::method::adalora::allocator::Triplet;
use fedp2eft_core::method::adalora::{AllocatorConfig, RankAllocator};
use goldens::golden;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn tensor(v: &Value, shape: (usize, usize)) -> anyhow::Result<Tensor> {
    Ok(Tensor::from_vec(floats(v), shape, &Device::Cpu)?)
}

fn triplets(ts: &[[Tensor; 3]]) -> Vec<Triplet<'_>> {
    ts.iter().map(|[a, e, b]| Triplet { a, e, b }).collect()
}

#[test]
fn allocator_matches_peft_step_by_step() -> anyhow::Result<()> {
    let g = golden("adalora.json")?;
    let c = &g["config"];
    let num = |k: &str| c[k].as_u64().expect("int") as usize;
    let shapes: Vec<(usize, usize, usize)> = c["shapes"]
        .as_array()
        .expect("shapes")
        .iter()
        .map(|s| {
            let v: Vec<usize> = s
                .as_array()
                .expect("shape")
                .iter()
                .map(|x| x.as_u64().expect("int") as usize)
                .collect();
            (v[0], v[1], v[2])
        })
        .collect();
    let cfg = AllocatorConfig {
        target_r: num("target_r"),
        tinit: num("tinit"),
        tfinal: num("tfinal"),
        delta_t: num("delta_t"),
        beta1: c["beta1"].as_f64().expect("beta1"),
        beta2: c["beta2"].as_f64().expect("beta2"),
        total_step: num("total_step"),
    };
    let mut alloc = RankAllocator::new(&shapes, &cfg)?;
    let mut masked_steps = 0;
    for s in g["steps"].as_array().expect("steps") {
        let step = s["step"].as_u64().expect("step") as usize;
        let mut values = Vec::new();
        let mut grads = Vec::new();
        for (layer, &(r, d_in, d_out)) in
            s["inputs"].as_array().expect("inputs").iter().zip(&shapes)
        {
            let part = |name: &str, key: &str, shape| tensor(&layer[name][key], shape);
            values.push([
                part("lora_A", "value", (r, d_in))?,
                part("lora_E", "value", (r, 1))?,
                part("lora_B", "value", (d_out, r))?,
            ]);
            grads.push([
                part("lora_A", "grad", (r, d_in))?,
                part("lora_E", "grad", (r, 1))?,
                part("lora_B", "grad", (d_out, r))?,
            ]);
        }
        let (budget, keep) = alloc.step(step, &triplets(&values), &triplets(&grads))?;
        assert_eq!(
            budget as u64,
            s["budget"].as_u64().expect("budget"),
            "step {step}"
        );
        assert_eq!(
            keep.is_some(),
            s["masked"].as_bool().expect("masked"),
            "step {step}"
        );
        let want_pattern = &s["rank_pattern"];
        match &keep {
            None => assert!(want_pattern.is_null(), "step {step}"),
            Some(keep) => {
                masked_steps += 1;
                let want: Vec<Vec<bool>> = want_pattern
                    .as_array()
                    .expect("pattern")
                    .iter()
                    .map(|l| {
                        l.as_array()
                            .expect("layer")
                            .iter()
                            .map(|b| b.as_bool().expect("bool"))
                            .collect()
                    })
                    .collect();
                assert_eq!(keep, &want, "step {step}");
                let kept: usize = keep.iter().flatten().filter(|&&k| k).count();
                assert_eq!(kept, budget, "step {step}: the cut leaves the budget");
            }
        }
        // E after masking: the golden's values, zero where cut.
        for (l, e_after) in s["e_after"].as_array().expect("e_after").iter().enumerate() {
            let e = values[l][1].flatten_all()?.to_vec1::<f32>()?;
            let got: Vec<f32> = match &keep {
                Some(k) => e
                    .iter()
                    .zip(&k[l])
                    .map(|(&x, &k)| if k { x } else { 0.0 })
                    .collect(),
                None => e,
            };
            assert_eq!(got, floats(e_after), "step {step}, layer {l}");
        }
    }
    assert!(masked_steps >= 5, "the trace masks on {masked_steps} steps");
    Ok(())
}

#[test]
fn bad_allocator_settings_are_refused() {
    let ok = AllocatorConfig {
        target_r: 2,
        tinit: 2,
        tfinal: 2,
        delta_t: 1,
        beta1: 0.85,
        beta2: 0.85,
        total_step: 10,
    };
    let accepted = |cfg: &AllocatorConfig| RankAllocator::new(&[(6, 4, 4)], cfg).is_ok();
    assert!(accepted(&ok));
    for (why, bad) in [
        (
            "target above init",
            AllocatorConfig {
                target_r: 8,
                ..ok.clone()
            },
        ),
        (
            "no budgeting phase",
            AllocatorConfig {
                total_step: 4,
                ..ok.clone()
            },
        ),
        (
            "β = 1",
            AllocatorConfig {
                beta1: 1.0,
                ..ok.clone()
            },
        ),
    ] {
        assert!(!accepted(&bad), "{why}");
    }
}
