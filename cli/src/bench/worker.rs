//! One measured workload, run in its own child process (`fedp2eft bench --worker ...`) so that
//! its peak RSS is its own. Prints one JSON line on stdout.
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use clap::ValueEnum;
use fedp2eft_core::adapter::{AdapterInit, LoraConfig, PriorConfig};
use fedp2eft_core::data::{load_emoji, EmojiConfig};
use fedp2eft_core::model::{SeqClassifier, Tokenize};
use fedp2eft_core::train::{self, Dataset, Encoded, Objective, Params, TrainConfig};
use fedp2eft_core::{home, Control, Progress, Stage};
use serde::{Deserialize, Serialize};

use super::{flops, reference};
use crate::models::{self, ModelSpec};
use crate::progress::Bars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Base-model forward (adapters off), as in feature extraction and inference.
    Forward,
    /// One BT-LoRA stage-1 step through `train::train`: CE + priors, backward, AdamW.
    TrainStep,
    /// One plain LoRA step (r = 8, α = 16, λ fixed at one on every linear): CE, AdamW.
    LoraStep,
    /// The whole `personalize` on one client of the emoji benchmark: features, PSG, prune,
    /// 2-epoch fine-tune, merge, evaluation before and after.
    Personalize,
}

impl Workload {
    /// The command-line and file name of the workload.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Forward => "forward",
            Workload::TrainStep => "train-step",
            Workload::LoraStep => "lora-step",
            Workload::Personalize => "personalize",
        }
    }

    /// The workload's name in scripts/reference/bench_reference.py.
    pub fn reference_name(self) -> &'static str {
        match self {
            Workload::TrainStep => "bt-lora-step",
            other => other.name(),
        }
    }
}

/// Sizes shared by the parent and its workers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub iters: usize,
    pub r_max: usize,
    pub labels: usize,
    /// `personalize`'s micro-batch (None: whole batches).
    #[serde(default)]
    pub micro_batch: Option<usize>,
}

/// What one worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub workload: Workload,
    pub load_seconds: f64,
    pub warmup_seconds: f64,
    pub times_seconds: Vec<f64>,
    /// Real (non-padding) tokens per iteration.
    pub tokens: usize,
    pub flops: f64,
    pub rss_after_load_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    /// Workload-specific details (personalize: its report's timings, accuracy, ranks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// How the benchmark's token ids are made (recorded in the results).
pub const TOKENS: &str = "real: texts of the default emoji benchmark (10 languages) \
    concatenated per row and cut to exactly `seq` tokens by the model's own tokenizer; no padding";

/// BT-LoRA as the authors' baseline initialises it: seed-fixed kaiming-uniform A, B = 0,
/// λ = 1e-4 trainable, α = 2·r_max (scaling 2), on every adapted linear.
fn attach_bt_lora(model: &mut SeqClassifier, r: usize, seed: u64) -> Result<()> {
    let lora = LoraConfig {
        r,
        lora_alpha: 2.0 * r as f64,
        seed,
    };
    let init = AdapterInit::new(model, lora)?;
    init.install_full(model, &vec![1e-4f32; r * model.num_adapted()])?;
    Ok(())
}

/// `batch` rows of exactly `seq` real tokens.
fn real_batch(tok: &dyn Tokenize, home: &Path, batch: usize, seq: usize) -> Result<Vec<Encoded>> {
    let bench = load_emoji(&home::emojibase_dir_in(home), &EmojiConfig::default())?;
    let texts: Vec<(&str, usize)> = bench
        .clients
        .iter()
        .flat_map(|c| c.examples())
        .map(|e| (e.text.as_str(), e.label))
        .collect();
    ensure!(!texts.is_empty(), "the emoji benchmark has no texts");
    let stride = texts.len() / batch.max(1);
    let mut rows = Vec::with_capacity(batch);
    for row in 0..batch {
        let (mut text, mut next) = (String::new(), row * stride);
        let ids = loop {
            // Four texts at a time keeps the re-tokenisation cheap.
            for _ in 0..4 {
                text.push_str(texts[next % texts.len()].0);
                text.push_str(". ");
                next += 1;
            }
            let ids = tok.encode(&text, seq)?;
            if ids.len() >= seq {
                break ids;
            }
            ensure!(
                next < row * stride + 100_000,
                "texts never reach {seq} tokens"
            );
        };
        let label = texts[(row * stride) % texts.len()].1 as u32;
        rows.push(Encoded { ids, label });
    }
    Ok(rows)
}

/// VmRSS / VmHWM of this process in kB (Linux only).
pub fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Plain LoRA as the reference's peft LoraConfig(r, lora_alpha = 2r): λ fixed at one.
fn attach_lora(model: &mut SeqClassifier, r: usize, seed: u64) -> Result<()> {
    let lora = LoraConfig {
        r,
        lora_alpha: 2.0 * r as f64,
        seed,
    };
    let layers = model.num_adapted();
    let init = AdapterInit::new(model, lora)?;
    let ranks = vec![(0..r).collect::<Vec<_>>(); layers];
    init.install(model, &ranks, &vec![vec![1f32; r]; layers], false)?;
    Ok(())
}

/// Rank of the `lora-step` workload (the reference's LoRA baseline setting).
pub const LORA_STEP_RANK: usize = 8;

pub fn run(
    workload: Workload,
    spec: &ModelSpec,
    shape: Shape,
    home: &Path,
    job_dir: Option<&Path>,
) -> Result<()> {
    if workload == Workload::Personalize {
        return super::personalize::run(spec, shape, home, job_dir);
    }
    let dev = Device::Cpu;
    let source = spec.source(home)?;
    let mut loaded = models::load(&source, shape.labels, 42, &dev)?;
    let rows = real_batch(loaded.tokenizer.as_ref(), home, shape.batch, shape.seq)
        .context("build the benchmark batch")?;
    let pad_id = loaded.tokenizer.pad_id();
    let tokens: usize = rows.iter().map(|r| r.ids.len()).sum();
    if tokens != shape.batch * shape.seq {
        bail!(
            "batch has {tokens} tokens, expected {}",
            shape.batch * shape.seq
        );
    }
    if let Some(dir) = job_dir {
        return reference::write_step_job(dir, &loaded.model, &rows, shape);
    }
    let model = &mut loaded.model;
    let r = match workload {
        Workload::TrainStep => shape.r_max,
        Workload::LoraStep => LORA_STEP_RANK,
        _ => 0,
    };
    match workload {
        Workload::TrainStep => attach_bt_lora(model, r, 42)?,
        Workload::LoraStep => attach_lora(model, r, 42)?,
        _ => {}
    }
    let counted = flops::count(model, shape.batch, shape.seq, r);
    let rss_after_load_kb = proc_status_kb("VmRSS:");

    let one_iter: Box<dyn Fn() -> Result<()>> = match workload {
        Workload::Personalize => bail!("personalize has its own worker"),
        Workload::Forward => {
            let all: Vec<usize> = (0..rows.len()).collect();
            let b = train::make_batch(&rows, &all, pad_id, &dev)?;
            let model = &*model;
            Box::new(move || {
                // Reading one value back makes sure the whole graph was computed.
                model
                    .forward(&b.ids, &b.mask)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
                Ok(())
            })
        }
        Workload::TrainStep | Workload::LoraStep => {
            let cfg = TrainConfig {
                epochs: 1,
                batch_size: shape.batch,
                max_len: shape.seq,
                ..TrainConfig::default()
            };
            let params = Params::adapters(model);
            let objective = if workload == Workload::TrainStep {
                Objective::bayes_tune(model, PriorConfig::default(), rows.len())?
            } else {
                Objective::CrossEntropy
            };
            let (model, rows) = (&*model, &rows);
            Box::new(move || {
                let data = Dataset {
                    examples: rows,
                    pad_id,
                };
                let report = train::train(
                    model,
                    &data,
                    &cfg,
                    &params,
                    &objective,
                    "bench",
                    &Control::default(),
                )?;
                ensure!(report.steps == 1, "expected one step, ran {}", report.steps);
                Ok(())
            })
        }
    };

    let ctl = Bars::new().control();
    let total = shape.iters + 1;
    let tick = |done| {
        ctl.report(Progress {
            stage: if r > 0 { Stage::Train } else { Stage::Evaluate },
            phase: format!("{} {}", spec.name(), workload.name()),
            done,
            total,
            loss: None,
        })
    };
    let start = Instant::now();
    one_iter()?;
    let warmup_seconds = start.elapsed().as_secs_f64();
    tick(1);
    let mut times_seconds = Vec::with_capacity(shape.iters);
    for i in 0..shape.iters {
        let start = Instant::now();
        one_iter()?;
        times_seconds.push(start.elapsed().as_secs_f64());
        tick(i + 2);
    }
    let m = Measured {
        workload,
        load_seconds: loaded.load_seconds,
        warmup_seconds,
        times_seconds,
        tokens,
        flops: match workload {
            Workload::Forward => counted.forward(),
            _ => counted.train_step(),
        },
        rss_after_load_kb,
        peak_rss_kb: proc_status_kb("VmHWM:"),
        detail: None,
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
