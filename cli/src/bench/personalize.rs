//! The `personalize` workload: the whole pipeline on one client of the emoji benchmark, from the
//! base model `train-base` saved, with a seeded (untrained) PSG: its cost does not depend on
//! its weights, and a fresh one keeps the benchmark independent of a federated run.
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use fedp2eft_core::data::{load_emoji, EmojiConfig};
use fedp2eft_core::method::Fedp2eft;
use fedp2eft_core::personalize::{personalize, PersonalizeConfig};
use fedp2eft_core::psg::{Psg, PsgConfig, PsgMeta, FEATURE_LAYOUT};
use fedp2eft_core::train::encode_all;
use fedp2eft_core::{home, Control};

use super::reference::{self, PersonalizeJob};
use super::worker::{proc_status_kb, Measured, Shape, Workload};
use crate::models::ModelSpec;
use crate::workload::{client, default_base_dir, load_base_for};

/// The client the README's main job personalizes.
pub const CLIENT: &str = "seen-hi-0";
/// The budget r of the comparison (issue 5: e5-small at r = 4).
pub const BUDGET: usize = 4;

pub fn run(spec: &ModelSpec, shape: Shape, home: &Path, job_dir: Option<&Path>) -> Result<()> {
    let mut bench = load_emoji(&home::emojibase_dir_in(home), &EmojiConfig::default())?;
    let base_dir = default_base_dir(home, &spec.to_string(), "emoji");
    let clock = Instant::now();
    let lm = load_base_for(&base_dir, &mut bench)?;
    let load_seconds = clock.elapsed().as_secs_f64();
    let rss_after_load_kb = proc_status_kb("VmRSS:");
    let data = client(&bench, Some(CLIENT))?;
    let meta = PsgMeta {
        base_model: lm.model.model_id(),
        num_layers: lm.model.num_adapted(),
        r_max: shape.r_max,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    let psg = Psg::new(meta, PsgConfig::default(), 42)?;
    let mut cfg = PersonalizeConfig::new(BUDGET);
    cfg.lora.r = shape.r_max;
    cfg.lora.lora_alpha = 2.0 * shape.r_max as f64;
    cfg.train.micro_batch = shape.micro_batch;
    let (max_len, labels) = (cfg.train.max_len, lm.model.num_labels());
    let tok = lm.tokenizer.as_ref();
    let train = encode_all(&data.train, tok, max_len, labels)?;
    let test = encode_all(&data.test, tok, max_len, labels)?;
    if let Some(dir) = job_dir {
        let psg_path = dir.join("psg.safetensors");
        psg.save(&psg_path)?;
        reference::write_personalize_job(
            dir,
            &PersonalizeJob {
                model_dir: &base_dir,
                labels,
                psg: &psg_path,
                budget: BUDGET,
                r_max: shape.r_max,
                lora_alpha: cfg.lora.lora_alpha,
                epochs: cfg.train.epochs,
                batch_size: cfg.train.batch_size,
                lr: cfg.train.lr_ab,
                eval_batch: cfg.eval_batch,
                seed: cfg.train.seed,
                train: &train,
                test: &test,
            },
        )?;
        return Ok(());
    }
    let out = personalize(
        &lm.model,
        lm.tokenizer.as_ref(),
        data,
        &Fedp2eft::new(&psg),
        &cfg,
        &Control::default(),
    )
    .context("personalize")?;
    let r = &out.report;
    // Real tokens of one epoch over the train set.
    let tokens = train.iter().map(|e| e.ids.len()).sum();
    let m = Measured {
        workload: Workload::Personalize,
        load_seconds,
        warmup_seconds: 0.0,
        times_seconds: vec![r.timings.total_s],
        tokens,
        flops: 0.0,
        rss_after_load_kb,
        peak_rss_kb: proc_status_kb("VmHWM:"),
        detail: Some(serde_json::to_value(r)?),
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
