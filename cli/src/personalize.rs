//! `fedp2eft personalize`: features → PSG (or a BT-LoRA-learned λ) → prune to the budget →
//! fine-tune → merge, on one client; writes the report, the merged model and a PEFT adapter.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fedp2eft_core::adapter::{export_peft, LoraConfig, PriorConfig};
use fedp2eft_core::method::{BtLora, Fedp2eft, Lora, Method};
use fedp2eft_core::model::{save_base, LoadedModel};
use fedp2eft_core::personalize::{personalize, PersonalizeConfig, PersonalizeReport};
use fedp2eft_core::psg::Psg;

use crate::bt_lora::{learn, LearnArgs};
use crate::progress::Bars;
use crate::workload::{client, load_base_for, print_rank_map, LambdaFile};

#[derive(Args, Debug)]
pub struct PersonalizeArgs {
    /// r: average rank per adapted layer; r·L ranks are kept in total (1..=r_max).
    #[arg(long)]
    pub budget: usize,
    /// A trained PSG (safetensors) giving λ̂ from the client's features.
    #[arg(long, conflicts_with_all = ["bt_lora", "lambda", "lora"])]
    pub psg: Option<PathBuf>,
    /// The BT-LoRA baseline: learn λ on this client first (or reuse --lambda).
    #[arg(long, conflicts_with = "lora")]
    pub bt_lora: bool,
    /// The plain LoRA baseline: rank = budget on every layer, λ = 1.
    #[arg(long, conflicts_with = "lambda")]
    pub lora: bool,
    /// A λ file from `fedp2eft bt-lora` (implies --bt-lora).
    #[arg(long)]
    pub lambda: Option<PathBuf>,
    #[command(flatten)]
    pub learn: LearnArgs,
    /// Fine-tune learning rate of A and B (λ stays frozen).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Output folder: report.json, merged/ (the personalised model), adapter/ (PEFT).
    #[arg(long)]
    pub out: PathBuf,
}

fn summary(r: &PersonalizeReport) {
    println!(
        "client {} ({}), budget r = {} of r_max {}: {} ranks on {} of {} layers",
        r.client, r.language, r.budget, r.r_max, r.total_rank, r.active_layers, r.num_layers
    );
    println!(
        "test accuracy: before {:.2}% ({}/{}), after {:.2}% ({}/{})",
        r.accuracy_before.percent(),
        r.accuracy_before.correct,
        r.accuracy_before.total,
        r.accuracy_after.percent(),
        r.accuracy_after.correct,
        r.accuracy_after.total
    );
    let ranks: Vec<usize> = r.ranks.iter().map(|l| l.rank).collect();
    print_rank_map(&ranks);
    let t = &r.timings;
    println!(
        "time {:.1}s (features {:.1}, structure {:.1}, fine-tune {:.1}, merge {:.1}, eval {:.1}); \
         peak RSS {}",
        t.total_s,
        t.features_s,
        t.structure_s,
        t.finetune_s,
        t.merge_s,
        t.evaluate_s,
        r.peak_rss_bytes
            .map_or("n/a".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
    );
}

fn lambda_for(
    a: &PersonalizeArgs,
    lm: &LoadedModel,
    data: &fedp2eft_core::data::ClientData,
) -> Result<Vec<f32>> {
    let lf = match &a.lambda {
        Some(p) => LambdaFile::load(p)?,
        None => {
            println!(
                "learning λ with BT-LoRA on {} ({} examples)",
                data.id,
                data.train.len()
            );
            learn(&a.learn, lm, data)?
        }
    };
    if lf.model_id != lm.model.model_id() || lf.r_max != a.learn.r_max {
        bail!(
            "λ was learned on `{}` with r_max {}, not on `{}` with r_max {}",
            lf.model_id,
            lf.r_max,
            lm.model.model_id(),
            a.learn.r_max
        );
    }
    Ok(lf.raw)
}

pub fn run(a: &PersonalizeArgs, home: &Path) -> Result<()> {
    // Checked before any work (core checks again): a bad budget should not cost a λ run.
    if a.budget == 0 || a.budget > a.learn.r_max {
        return Err(fedp2eft_core::Error::Budget {
            budget: a.budget,
            r_max: a.learn.r_max,
        }
        .into());
    }
    let mut bench = a.learn.data.load(home)?;
    client(&bench, a.learn.client.as_deref())?; // a wrong id fails before the base loads
    let lm = load_base_for(&a.learn.base_dir(home), &mut bench)?;
    let data = client(&bench, a.learn.client.as_deref())?;
    let psg = a.psg.as_deref().map(Psg::load).transpose()?;
    let lambda = match &psg {
        Some(_) => None,
        None if a.lora => None,
        None if a.bt_lora || a.lambda.is_some() => Some(lambda_for(a, &lm, data)?),
        None => bail!("choose where λ comes from: --psg FILE, --bt-lora [--lambda FILE] or --lora"),
    };
    let priors = PriorConfig::default();
    let method: Box<dyn Method + '_> = match (&psg, &lambda) {
        (Some(p), _) => Box::new(Fedp2eft::new(p)),
        (None, Some(raw)) => Box::new(BtLora {
            raw,
            priors: &priors,
        }),
        (None, None) => Box::new(Lora),
    };
    let mut cfg = PersonalizeConfig::new(a.budget);
    cfg.lora = LoraConfig {
        r: a.learn.r_max,
        lora_alpha: a.learn.lora_alpha,
        seed: 42,
    };
    cfg.train.epochs = a.learn.epochs;
    cfg.train.batch_size = a.learn.batch_size;
    cfg.train.max_len = a.learn.max_len;
    cfg.train.lr_ab = a.lr;
    let bars = Bars::new();
    let out = personalize(
        &lm.model,
        lm.tokenizer.as_ref(),
        data,
        method.as_ref(),
        &cfg,
        &bars.control(),
    )?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let report_path = a.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&out.report)?)?;
    let sp = crate::progress::spinner("writing the merged model and the PEFT adapter");
    let merged = LoadedModel {
        model: out.merged,
        tokenizer: lm.tokenizer,
        manifest: lm.manifest,
    };
    save_base(&merged, &a.out.join("merged"))?;
    export_peft(
        &out.adapted,
        &a.out.join("adapter"),
        &a.learn.base_dir(home).to_string_lossy(),
    )?;
    sp.finish_and_clear();
    summary(&out.report);
    println!(
        "wrote {}, merged/ and adapter/ in {}",
        report_path.display(),
        a.out.display()
    );
    Ok(())
}
