//! Stage 2: the base model — the encoder with a fresh head, trained by FedAvg of full
//! fine-tunes on the seen pool (`fedavg_round`). After every round the trained weights are
//! checkpointed (`ckpt-<k>.safetensors`, then `state.json` names it), so a killed run resumes
//! at the next round with the same client draws; the finished model is `base/model/`.
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use fedp2eft_core::data::{Benchmark, Pool};
use fedp2eft_core::federated::base::{load_linears, save_linears};
use fedp2eft_core::federated::fedavg_round;
use fedp2eft_core::model::{load_base, load_pretrained, save_base, LoadedModel};
use serde::{Deserialize, Serialize};

use super::config::ReproConfig;
use crate::atomic::write_atomic;
use crate::models::ModelSpec;
use crate::progress::Bars;

#[derive(Serialize, Deserialize)]
struct State {
    /// Rounds completed; `ckpt-<rounds>.safetensors` holds their result.
    rounds: usize,
}

pub fn run(
    cfg: &ReproConfig,
    home: &Path,
    bench: &Benchmark,
    out: &Path,
    bars: &Bars,
) -> Result<LoadedModel> {
    let dir = out.join("base");
    let model_dir = dir.join("model");
    if model_dir
        .join(fedp2eft_core::model::spec::MANIFEST)
        .is_file()
    {
        let lm = load_base(&model_dir).context("loading the run's base model")?;
        println!("base: done ({})", model_dir.display());
        return Ok(lm);
    }
    std::fs::create_dir_all(&dir)?;
    let spec: ModelSpec = cfg.model.encoder.parse()?;
    let source = spec.source(home)?;
    let mut lm = load_pretrained(
        &crate::models::core_spec(&source),
        &bench.label_names,
        cfg.model.seed,
    )?;
    let state_path = dir.join("state.json");
    let mut done = 0;
    if let Ok(text) = std::fs::read_to_string(&state_path) {
        let st: State = serde_json::from_str(&text)?;
        load_linears(
            &mut lm.model,
            &dir.join(format!("ckpt-{}.safetensors", st.rounds)),
        )?;
        done = st.rounds;
        println!("base: resuming after round {done}");
    }
    let seen = bench.pool(Pool::Seen);
    let mut fc = cfg.base.clone();
    fc.local.max_len = cfg.model.max_len;
    let ctl = bars.control();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("rounds.jsonl"))?;
    for k in done..fc.rounds {
        let r = fedavg_round(&mut lm.model, lm.tokenizer.as_ref(), &seen, k, &fc, &ctl)?;
        println!(
            "base round {}/{}: {} clients, {} samples, loss {:.4}, {:.1}s",
            k + 1,
            fc.rounds,
            r.clients.len(),
            r.samples,
            r.loss,
            r.seconds
        );
        writeln!(log, "{}", serde_json::to_string(&r)?)?;
        let ckpt = dir.join(format!("ckpt-{}.safetensors", k + 1));
        save_linears(&lm.model, &ckpt)?;
        write_atomic(
            &state_path,
            &serde_json::to_string(&State { rounds: k + 1 })?,
        )?;
        let _ = std::fs::remove_file(dir.join(format!("ckpt-{k}.safetensors")));
    }
    let tmp = dir.join("model.partial");
    let _ = std::fs::remove_dir_all(&tmp);
    save_base(&lm, &tmp)?;
    std::fs::rename(&tmp, &model_dir)?;
    let _ = std::fs::remove_file(dir.join(format!("ckpt-{}.safetensors", fc.rounds)));
    println!("base: saved to {}", model_dir.display());
    load_base(&model_dir).context("reloading the saved base model")
}
