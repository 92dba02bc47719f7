//! `fedp2eft personalize --method M`: the method's structure for the budget (FedP²EFT: features →
//! PSG → prune; BT-LoRA: a λ learned on the client → prune; LoRA; AdaLoRA; FedL2P: its net's
//! per-matrix learning rates) → fine-tune → merge, on one client; writes the report, the merged
//! model and a PEFT adapter.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fedp2eft_core::adapter::{export_peft, LoraConfig};
use fedp2eft_core::method::{build, Inputs, LrNet, MethodKind};
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
    /// lora | bt-lora | fedp2eft | adalora | fedl2p [default: fedp2eft with --psg, bt-lora
    /// with --lambda, fedl2p with --lr-net]
    #[arg(long)]
    pub method: Option<MethodKind>,
    /// FedP²EFT: a trained PSG (safetensors) giving λ̂ from the client's features.
    #[arg(long)]
    pub psg: Option<PathBuf>,
    /// BT-LoRA: a λ file from `fedp2eft bt-lora` (else λ is learned on this client first).
    #[arg(long)]
    pub lambda: Option<PathBuf>,
    /// FedL2P: a learning-rate net of this budget (`reproduce`'s fedl2p/r<budget>/ rounds).
    #[arg(long)]
    pub lr_net: Option<PathBuf>,
    #[command(flatten)]
    pub learn: LearnArgs,
    /// Fine-tune learning rate of A and B (λ stays frozen) [default: 1e-4; AdaLoRA 1e-3, the
    /// authors'; FedL2P takes its net's per-matrix rates]
    #[arg(long)]
    pub lr: Option<f64>,
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

/// The method asked for, or the one its input implies; an input the method does not read is
/// refused rather than ignored.
fn method_of(a: &PersonalizeArgs) -> Result<MethodKind> {
    let given = [
        (a.psg.is_some(), "--psg", MethodKind::Fedp2eft),
        (a.lambda.is_some(), "--lambda", MethodKind::BtLora),
        (a.lr_net.is_some(), "--lr-net", MethodKind::Fedl2p),
    ];
    let kind = match a.method {
        Some(k) => k,
        None => match given.iter().filter(|g| g.0).collect::<Vec<_>>()[..] {
            [g] => g.2,
            [] => bail!("choose a method: --method lora|bt-lora|fedp2eft|adalora|fedl2p"),
            _ => bail!("--psg, --lambda and --lr-net belong to different methods: give one"),
        },
    };
    if let Some(g) = given.iter().find(|g| g.0 && g.2 != kind) {
        bail!("{} is {}'s input, not {kind}'s", g.1, g.2);
    }
    if kind == MethodKind::Fedl2p && a.lr.is_some() {
        bail!("--lr does not apply to fedl2p: its net gives every matrix its learning rate");
    }
    Ok(kind)
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
    let kind = method_of(a)?;
    let mut bench = a.learn.data.load(home)?;
    client(&bench, a.learn.client.as_deref())?; // a wrong id fails before the base loads
    let lm = load_base_for(&a.learn.base_dir(home), &mut bench)?;
    let data = client(&bench, a.learn.client.as_deref())?;
    let psg = a.psg.as_deref().map(Psg::load).transpose()?;
    let lr_net = a.lr_net.as_deref().map(LrNet::load).transpose()?;
    let learned = match kind {
        MethodKind::BtLora => Some(lambda_for(a, &lm, data)?),
        _ => None,
    };
    // BT-LoRA's clamp range and AdaLoRA's settings: the authors' (Inputs' defaults).
    let inputs = Inputs {
        psg: psg.as_ref(),
        learned: learned.as_deref(),
        lr_net: lr_net.as_ref(),
        ..Inputs::default()
    };
    let method = build(kind, &inputs)?;
    let mut cfg = PersonalizeConfig::new(a.budget);
    cfg.lora = LoraConfig {
        r: a.learn.r_max,
        lora_alpha: a.learn.lora_alpha,
        seed: 42,
    };
    cfg.train.epochs = a.learn.epochs;
    cfg.train.batch_size = a.learn.batch_size;
    cfg.train.micro_batch = Some(a.learn.micro_batch);
    cfg.train.max_len = a.learn.max_len;
    cfg.train.lr_ab = a.lr.unwrap_or(inputs.lr(kind, 1e-4));
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
