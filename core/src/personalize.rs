//! `personalize(budget)`: the method builds the client's adapters (FedP²EFT: features → PSG →
//! prune to r·L ranks, λ frozen) → the one training loop fine-tunes them → merge → evaluate.
//! The function the FFI, the CLI and every evaluation call.
use std::time::Instant;

use serde::Serialize;

use crate::adapter::LoraConfig;
use crate::control::{Control, Progress, Stage};
use crate::data::ClientData;
use crate::method::{Client, Method, Setup};
use crate::model::{SeqClassifier, Tokenize};
use crate::prune::RankPlan;
use crate::train::{accuracy_of, encode_all, evaluate, predict_all, run_with, Accuracy, Dataset};
use crate::train::{ModelTask, TrainConfig, TrainReport};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct PersonalizeConfig {
    /// r: average rank per layer; r·L ranks are kept in total.
    pub budget: usize,
    pub lora: LoraConfig,
    /// The fine-tune (authors: 2 epochs, lr 1e-4, batch 32; λ is not trained).
    pub train: TrainConfig,
    pub eval_batch: usize,
    /// Evaluate the base model on the test split first (`accuracy_before`); a caller that
    /// already knows it (one base evaluation per client for many methods) turns this off and
    /// gets an empty `accuracy_before`.
    pub evaluate_before: bool,
}

impl PersonalizeConfig {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            lora: LoraConfig::default(),
            train: TrainConfig::default(),
            eval_batch: 64,
            evaluate_before: true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerRank {
    pub name: String,
    pub rank: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub features_s: f64,
    pub structure_s: f64,
    pub finetune_s: f64,
    pub merge_s: f64,
    pub evaluate_s: f64,
    pub total_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonalizeReport {
    pub model_id: String,
    pub client: String,
    pub language: String,
    pub budget: usize,
    pub r_max: usize,
    pub num_layers: usize,
    pub active_layers: usize,
    pub total_rank: usize,
    pub ranks: Vec<LayerRank>,
    /// The base model's accuracy on the client's test split.
    pub accuracy_before: Accuracy,
    /// The merged personalised model's accuracy on the same split.
    pub accuracy_after: Accuracy,
    /// Its predicted class of every test example, in the client's order (paired statistics).
    pub predictions: Vec<u32>,
    pub train_examples: usize,
    pub finetune: TrainReport,
    pub timings: Timings,
    pub peak_rss_bytes: Option<u64>,
}

/// The outcome: the adapted (unmerged, exportable as PEFT) and the merged model.
pub struct Personalized {
    pub adapted: SeqClassifier,
    pub merged: SeqClassifier,
    pub plan: RankPlan,
    pub report: PersonalizeReport,
}

pub fn personalize(
    base: &SeqClassifier,
    tok: &dyn Tokenize,
    client: &ClientData,
    method: &dyn Method,
    cfg: &PersonalizeConfig,
    ctl: &Control,
) -> Result<Personalized> {
    let _compute = crate::runtime::enter();
    let start = Instant::now();
    let r_max = cfg.lora.r;
    if cfg.budget == 0 || cfg.budget > r_max {
        return Err(Error::Budget {
            budget: cfg.budget,
            r_max,
        });
    }
    method.check(base, &cfg.lora)?;
    for (split, set) in [("train", &client.train), ("test", &client.test)] {
        if set.is_empty() {
            return Err(Error::EmptyData(format!(
                "client {} has no {split} examples",
                client.id
            )));
        }
    }
    let (max_len, labels) = (cfg.train.max_len, base.num_labels());
    let train_enc = encode_all(&client.train, tok, max_len, labels)?;
    let test_enc = encode_all(&client.test, tok, max_len, labels)?;
    let pad_id = tok.pad_id();
    let train_set = Dataset {
        examples: &train_enc,
        pad_id,
    };
    let test_set = Dataset {
        examples: &test_enc,
        pad_id,
    };
    let mut t = Timings::default();

    let clock = Instant::now();
    let before = if cfg.evaluate_before {
        evaluate(base, &test_set, cfg.eval_batch, ctl)?
    } else {
        Accuracy::default()
    };
    t.evaluate_s += clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let Setup {
        model: adapted,
        plan,
        params,
        objective,
        mut hook,
        features_s,
    } = method.setup(&Client {
        base,
        train: &train_set,
        budget: cfg.budget,
        lora: &cfg.lora,
        steps: train_enc.len().div_ceil(cfg.train.batch_size.max(1)) * cfg.train.epochs,
        ctl,
    })?;
    t.features_s = features_s;
    t.structure_s = clock.elapsed().as_secs_f64() - features_s;

    let clock = Instant::now();
    let task = ModelTask {
        model: &adapted,
        data: &train_set,
        objective: &objective,
    };
    let finetune = run_with(&task, &cfg.train, &params, hook.as_mut(), "fine-tune", ctl)?;
    t.finetune_s = clock.elapsed().as_secs_f64();
    let plan = match hook.kept() {
        Some(keep) => final_plan(&adapted, plan, keep)?,
        None => plan,
    };
    let clock = Instant::now();
    ctl.cancel.check()?;
    let mut merged = adapted.clone();
    merged.merge_adapters()?;
    t.merge_s = clock.elapsed().as_secs_f64();
    ctl.report(Progress {
        stage: Stage::Merge,
        phase: "merge".into(),
        done: 1,
        total: 1,
        loss: None,
    });

    let clock = Instant::now();
    let predictions = predict_all(&merged, &test_set, cfg.eval_batch, ctl)?;
    let after = accuracy_of(&test_set, &predictions);
    t.evaluate_s += clock.elapsed().as_secs_f64();
    t.total_s = start.elapsed().as_secs_f64();

    let ranks = adapted
        .linears()
        .iter()
        .zip(plan.ranks_per_layer())
        .map(|(l, rank)| LayerRank {
            name: l.name.clone(),
            rank,
        })
        .collect();
    let report = PersonalizeReport {
        model_id: base.model_id(),
        client: client.id.clone(),
        language: client.language.clone(),
        budget: cfg.budget,
        r_max,
        num_layers: base.num_adapted(),
        active_layers: plan.active_layers(),
        total_rank: plan.total_rank(),
        ranks,
        accuracy_before: before,
        accuracy_after: after,
        predictions,
        train_examples: train_enc.len(),
        finetune,
        timings: t,
        peak_rss_bytes: crate::mem::peak_rss_bytes(),
    };
    Ok(Personalized {
        adapted,
        merged,
        plan,
        report,
    })
}

/// The plan after a method that reallocated ranks while training: the surviving rank indices of
/// every layer with their trained scales.
fn final_plan(adapted: &SeqClassifier, plan: RankPlan, keep: Vec<Vec<usize>>) -> Result<RankPlan> {
    let mut lambda = Vec::with_capacity(keep.len());
    for (lin, k) in adapted.linears().iter().zip(&keep) {
        let values = match &lin.adapter {
            Some(a) => a.lambda.tensor().to_vec1::<f32>()?,
            None => Vec::new(),
        };
        lambda.push(
            k.iter()
                .map(|&i| values.get(i).copied().unwrap_or(0.0))
                .collect(),
        );
    }
    Ok(RankPlan {
        keep,
        lambda,
        ..plan
    })
}
