//! AdaLoRA end to end on a real model against peft (scripts/reference/adalora_model_golden.py):
//! MiniLM with every Linear adapted, the same formula-made head and A/B init, six AdamW steps on
//! one batch; every step's loss and singular values E (and so every mask) and the final rank
//! pattern must match peft's.
mod goldens;

use candle_core::{Device, Tensor};
use fedp2eft_core::adapter::LoraConfig;
use fedp2eft_core::method::{AdaLora, AdaLoraConfig, Client, Method};
use fedp2eft_core::model::load_hf;
use fedp2eft_core::train::{run_with, Dataset, Encoded, ModelTask, StepHook, TrainConfig};
use fedp2eft_core::Control;
use goldens::{golden, u32s};

/// Runs the method's hook, then records every layer's E.
struct Record {
    inner: Box<dyn StepHook>,
    e: Vec<candle_core::Var>,
    seen: Vec<Vec<Vec<f32>>>,
}

impl StepHook for Record {
    fn after_step(
        &mut self,
        step: usize,
        total: usize,
        grads: &candle_core::backprop::GradStore,
    ) -> fedp2eft_core::Result<()> {
        self.inner.after_step(step, total, grads)?;
        let e = self
            .e
            .iter()
            .map(|v| v.as_tensor().to_vec1::<f32>())
            .collect::<candle_core::Result<_>>()?;
        self.seen.push(e);
        Ok(())
    }
    fn kept(&self) -> Option<Vec<Vec<usize>>> {
        self.inner.kept()
    }
}

fn formula(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> anyhow::Result<Tensor> {
    let v: Vec<f32> = (0..rows * cols)
        .map(|k| f(k / cols, k % cols) as f32)
        .collect();
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
}

#[test]
fn adalora_matches_peft_on_minilm() -> anyhow::Result<()> {
    let g = golden("adalora_model.json")?;
    let labels = g["labels_count"].as_u64().expect("labels") as usize;
    let mut base = load_hf(&fedp2eft_core::home::minilm_dir(), labels, 42, &Device::Cpu)?;
    let hidden = base.classifier.in_features();
    base.classifier
        .set_weight(&formula(labels, hidden, |o, i| {
            0.02 * (0.37 * (o * hidden + i) as f64 + 0.5).sin()
        })?)?;
    base.classifier.bias = Some(Tensor::zeros(
        labels,
        candle_core::DType::F32,
        &Device::Cpu,
    )?);
    let examples: Vec<Encoded> = g["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .zip(u32s(&g["labels"]))
        .map(|(ids, label)| Encoded {
            ids: u32s(ids),
            label,
        })
        .collect();
    let data = Dataset {
        examples: &examples,
        pad_id: 0,
    };
    let steps = g["steps"].as_array().expect("steps");
    let (ctl, lora) = (Control::default(), LoraConfig::default());
    let cfg = AdaLoraConfig::default();
    let setup = AdaLora(&cfg).setup(&Client {
        base: &base,
        train: &data,
        budget: 2,
        lora: &lora,
        steps: steps.len(),
        ctl: &ctl,
    })?;
    let modules: Vec<String> = g["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .map(|m| {
            m.as_str()
                .expect("name")
                .trim_start_matches("bert.")
                .to_string()
        })
        .collect();
    let mut e = Vec::new();
    for lin in setup.model.linears() {
        let l = modules
            .iter()
            .position(|m| *m == lin.name)
            .unwrap_or_else(|| panic!("{} not in the golden", lin.name));
        let ad = lin.adapter.as_ref().expect("every layer adapted");
        let (r, d_in, d_out) = (ad.rank(), lin.in_features(), lin.out_features());
        assert_eq!(r, 3, "init_r = 1.5 × 2");
        let lf = l as f64;
        ad.a.set(&formula(r, d_in, |i, j| {
            0.02 * (1.3 * lf + 0.7 * i as f64 + 0.011 * j as f64).sin()
        })?)?;
        ad.b.set(&formula(d_out, r, |o, i| {
            0.02 * (0.9 * lf + 0.5 * i as f64 + 0.013 * o as f64).cos()
        })?)?;
        match &ad.lambda {
            fedp2eft_core::adapter::Lambda::Trainable(v) => e.push((l, v.clone())),
            _ => panic!("E must be trainable"),
        }
    }
    let order: Vec<usize> = e.iter().map(|(l, _)| *l).collect();
    let mut hook = Record {
        inner: setup.hook,
        e: e.into_iter().map(|(_, v)| v).collect(),
        seen: Vec::new(),
    };
    let train = TrainConfig {
        epochs: steps.len(),
        batch_size: examples.len(),
        lr_ab: cfg.lr,
        ..TrainConfig::default()
    };
    let task = ModelTask {
        model: &setup.model,
        data: &data,
        objective: &setup.objective,
    };
    let report = run_with(&task, &train, &setup.params, &mut hook, "adalora", &ctl)?;
    for (k, want) in steps.iter().enumerate() {
        let loss = want["loss"].as_f64().expect("loss") as f32;
        assert!(
            (report.epoch_loss[k] - loss).abs() < 1e-5,
            "step {k}: loss {} vs peft {loss}",
            report.epoch_loss[k]
        );
        for (ours, &l) in hook.seen[k].iter().zip(&order) {
            let theirs: Vec<f32> = want["e"][l]
                .as_array()
                .expect("e")
                .iter()
                .map(|x| x.as_f64().expect("f") as f32)
                .collect();
            for (a, b) in ours.iter().zip(&theirs) {
                assert_eq!(
                    *a == 0.0,
                    *b == 0.0,
                    "step {k}, {}: masks differ",
                    modules[l]
                );
                assert!(
                    (a - b).abs() <= 2e-6 + 1e-3 * b.abs(),
                    "step {k}, {}: E {ours:?} vs peft {theirs:?}",
                    modules[l]
                );
            }
        }
    }
    let final_ranks = u32s(&g["final_ranks"]);
    let kept = hook.kept().expect("AdaLoRA reports its final ranks");
    for (k, &l) in kept.iter().zip(&order) {
        assert_eq!(k.len() as u32, final_ranks[l], "{}", modules[l]);
    }
    Ok(())
}
