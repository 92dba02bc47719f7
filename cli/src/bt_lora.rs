//! `fedp2eft bt-lora`: learn λ on one client with BayesTune (the BT-LoRA baseline) and print
//! the rank structure it implies for a few budgets.
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use fedp2eft_core::adapter::{AdapterInit, LoraConfig, PriorConfig};
use fedp2eft_core::method::{learn_lambda, BASELINE_LAMBDA_INIT};
use fedp2eft_core::model::LoadedModel;
use fedp2eft_core::prune::select_top_by;
use fedp2eft_core::train::{encode_all, Dataset, TrainConfig};

use crate::progress::Bars;
use crate::workload::LambdaFile;
use crate::workload::{client, default_base_dir, load_base_for, print_rank_map, DataArgs};

/// Client, data, base model and BT-LoRA hyper-parameters (shared with `personalize`).
#[derive(Args, Debug, Clone)]
pub struct LearnArgs {
    /// Client id (e.g. seen-hi-0); optional when --data holds a single client.
    #[arg(long)]
    pub client: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Base model folder [default: $HOME/bases/e5-<data>].
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// r_max: candidate ranks per layer.
    #[arg(long, default_value_t = 32)]
    pub r_max: usize,
    #[arg(long, default_value_t = 64.0)]
    pub lora_alpha: f64,
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Examples per forward and backward pass: each step's gradient is accumulated over
    /// micro-batches of this size, the same step in a fraction of the activation memory (4
    /// keeps `personalize` on e5-small under 500 MB; ≥ --batch-size: whole batches).
    #[arg(long, default_value_t = 4)]
    pub micro_batch: usize,
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
}

#[derive(Args, Debug)]
pub struct BtLoraArgs {
    #[command(flatten)]
    pub learn: LearnArgs,
    /// Where to write λ [default: $HOME/lambda/<client>.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl LearnArgs {
    pub fn base_dir(&self, home: &Path) -> PathBuf {
        self.base
            .clone()
            .unwrap_or_else(|| default_base_dir(home, "e5", &self.data.tag()))
    }
}

/// Learns λ for `a.client` on `lm` and returns it as a λ file.
pub fn learn(
    a: &LearnArgs,
    lm: &LoadedModel,
    data: &fedp2eft_core::data::ClientData,
) -> Result<LambdaFile> {
    let enc = encode_all(
        &data.train,
        lm.tokenizer.as_ref(),
        a.max_len,
        lm.model.num_labels(),
    )?;
    let set = Dataset {
        examples: &enc,
        pad_id: lm.tokenizer.pad_id(),
    };
    let lora = LoraConfig {
        r: a.r_max,
        lora_alpha: a.lora_alpha,
        seed: 42,
    };
    let init = AdapterInit::new(&lm.model, lora)?;
    let lam0 = vec![BASELINE_LAMBDA_INIT; a.r_max * lm.model.num_adapted()];
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        micro_batch: Some(a.micro_batch),
        max_len: a.max_len,
        ..Default::default()
    };
    let priors = PriorConfig::default();
    let bars = Bars::new();
    let learned = learn_lambda(
        &lm.model,
        &set,
        &init,
        &lam0,
        &cfg,
        &priors,
        &bars.control(),
    )?;
    Ok(LambdaFile {
        model_id: lm.model.model_id(),
        client: data.id.clone(),
        r_max: a.r_max,
        clamped: learned.clamped(&priors),
        raw: learned.raw,
    })
}

pub fn run(args: &BtLoraArgs, home: &Path) -> Result<()> {
    let a = &args.learn;
    let mut bench = a.data.load(home)?;
    client(&bench, a.client.as_deref())?; // a wrong id fails before the base model loads
    let lm = load_base_for(&a.base_dir(home), &mut bench)?;
    let data = client(&bench, a.client.as_deref())?;
    println!(
        "BT-LoRA on {} ({} train examples, L = {}, r_max = {})",
        data.id,
        data.train.len(),
        lm.model.num_adapted(),
        a.r_max
    );
    let lf = learn(a, &lm, data)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| home.join("lambda").join(format!("{}.json", data.id)));
    lf.save(&out)?;
    println!("λ saved to {}", out.display());
    for budget in [2, 8] {
        if budget <= a.r_max {
            let plan = select_top_by(
                &lf.raw,
                &lf.clamped,
                lm.model.num_adapted(),
                a.r_max,
                budget,
            )?;
            println!("rank structure at r = {budget}:");
            print_rank_map(&plan.ranks_per_layer());
        }
    }
    Ok(())
}
