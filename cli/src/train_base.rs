//! `fedp2eft train-base`: train the base model (head, or every linear) on the seen pool and save
//! it; every personalization run starts from it.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use fedp2eft_core::data::{multilingual_accuracy, Benchmark, Example, Pool};
use fedp2eft_core::model::{load_pretrained, save_base, LoadedModel};
use fedp2eft_core::train::{encode_all, evaluate, Dataset, TrainConfig};
use fedp2eft_core::train_base::{train_base, BaseScope};

use crate::models::ModelSpec;
use crate::progress::Bars;
use crate::workload::{default_base_dir, DataArgs};

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Scope {
    /// Pooler + classifier on cached encoder outputs (minutes on 2 cores).
    Head,
    /// Every linear layer, as the paper's full fine-tuning (hours for e5-small on 2 cores).
    Full,
}

#[derive(Args, Debug)]
pub struct TrainBaseArgs {
    /// e5 (embedded multilingual default), minilm, mbert, or a HF checkpoint / E5S1 path.
    #[arg(long, default_value = "e5")]
    pub model: ModelSpec,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value = "head")]
    pub scope: Scope,
    /// Epochs over the seen pool [default: 10 for head, 2 for full].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rate [default: 1e-3 for head, 5e-5 (the paper's) for full].
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output folder [default: $HOME/bases/<model>-<data>].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn pooled(bench: &Benchmark, pool: Pool, test: bool) -> Vec<Example> {
    bench
        .pool(pool)
        .iter()
        .flat_map(|c| {
            if test {
                c.test.clone()
            } else {
                c.train.clone()
            }
        })
        .collect()
}

/// Unweighted mean over languages of pooled test accuracy, for one pool.
pub fn pool_accuracy(lm: &LoadedModel, bench: &Benchmark, pool: Pool, bars: &Bars) -> Result<f64> {
    let mut per_lang = Vec::new();
    for lang in bench.languages() {
        let ex: Vec<Example> = pooled(bench, pool, true)
            .into_iter()
            .filter(|e| e.language == lang)
            .collect();
        let enc = encode_all(&ex, lm.tokenizer.as_ref(), 128, lm.model.num_labels())?;
        let set = Dataset {
            examples: &enc,
            pad_id: lm.tokenizer.pad_id(),
        };
        let acc = evaluate(&lm.model, &set, 64, &bars.control())?;
        per_lang.push((lang, acc.correct, acc.total));
    }
    Ok(multilingual_accuracy(&per_lang))
}

pub fn run(a: &TrainBaseArgs, home: &Path) -> Result<()> {
    let bench = a.data.load(home)?;
    let source = a.model.source(home)?;
    let spec = crate::models::core_spec(&source);
    let sp = crate::progress::spinner(format!("loading {}", a.model));
    let mut lm = load_pretrained(&spec, &bench.label_names, a.seed)?;
    sp.finish_and_clear();
    let (scope, epochs, lr) = match a.scope {
        Scope::Head => (
            BaseScope::Head,
            a.epochs.unwrap_or(10),
            a.lr.unwrap_or(1e-3),
        ),
        Scope::Full => (BaseScope::Full, a.epochs.unwrap_or(2), a.lr.unwrap_or(5e-5)),
    };
    let cfg = TrainConfig {
        epochs,
        batch_size: a.batch_size,
        max_len: a.max_len,
        lr_base: lr,
        seed: a.seed,
        ..Default::default()
    };
    let train = pooled(&bench, Pool::Seen, false);
    let enc = encode_all(&train, lm.tokenizer.as_ref(), a.max_len, bench.num_labels)?;
    let set = Dataset {
        examples: &enc,
        pad_id: lm.tokenizer.pad_id(),
    };
    println!(
        "training the {:?} of {} on {} seen-pool examples ({} languages, {} labels), {epochs} epochs",
        a.scope,
        lm.manifest.name,
        enc.len(),
        bench.languages().len(),
        bench.num_labels
    );
    let bars = Bars::new();
    let report = train_base(&mut lm.model, &set, scope, &cfg, &bars.control())?;
    println!(
        "done in {:.1}s, loss per epoch {:?}",
        report.seconds, report.epoch_loss
    );
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_base_dir(home, &a.model.to_string(), &a.data.tag()));
    let sp = crate::progress::spinner(format!("saving to {}", out.display()));
    save_base(&lm, &out).with_context(|| format!("saving to {}", out.display()))?;
    sp.finish_and_clear();
    let seen = pool_accuracy(&lm, &bench, Pool::Seen, &bars)?;
    let unseen = pool_accuracy(&lm, &bench, Pool::Unseen, &bars)?;
    println!("base model saved to {}", out.display());
    println!("test accuracy (mean over languages): seen {seen:.2}%, unseen {unseen:.2}%");
    Ok(())
}
