//! Training the base model that personalization starts from (method.md: "Personalizing a model
//! whose head is random measures nothing"): cross-entropy on the seen pool, centrally.
//! Embeddings and layer norms stay frozen (the 250k-row table of e5-small dominates memory and
//! barely moves).
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::control::{Control, Progress, Stage};
use crate::model::SeqClassifier;
use crate::train::{chunks_by_length, make_batch, run, train, BatchLoss, Dataset, Task};
use crate::train::{Objective, Params, TrainConfig, TrainReport};
use crate::Result;

/// Which weights the base training updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseScope {
    /// Pooler and classifier on the frozen encoder. The encoder's first-token output is
    /// computed once and cached, so every epoch costs only the head: minutes, not hours, on a
    /// phone-class CPU.
    Head,
    /// Every linear layer (the paper's full fine-tuning, minus embeddings and layer norms).
    Full,
}

/// The head on cached encoder outputs.
struct HeadTask<'a> {
    model: &'a SeqClassifier,
    /// (n, hidden) first-token hidden states.
    first: Tensor,
    /// (n,) u32
    labels: Tensor,
}

impl Task for HeadTask<'_> {
    fn len(&self) -> usize {
        self.labels.dims1().unwrap_or(0)
    }
    fn loss(&self, idx: &[usize]) -> Result<BatchLoss> {
        let ids = Tensor::from_vec(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            idx.len(),
            self.first.device(),
        )?;
        let h = self.first.index_select(&ids, 0)?;
        let pooled = self.model.pooler.forward(&h, None)?.tanh()?;
        let logits = self.model.classifier.forward(&pooled, None)?;
        let y = self.labels.index_select(&ids, 0)?;
        Ok(BatchLoss {
            loss: candle_nn::loss::cross_entropy(&logits, &y)?,
            size: idx.len(),
            tokens: 0,
        })
    }
}

/// The encoder's first-token output for every example (no gradient), in data order.
fn first_token_states(model: &SeqClassifier, data: &Dataset, ctl: &Control) -> Result<Tensor> {
    let n = data.examples.len();
    let mut rows: Vec<Option<Tensor>> = vec![None; n];
    let mut done = 0;
    for idx in chunks_by_length(data.examples, 64) {
        ctl.cancel.check()?;
        let b = make_batch(data.examples, &idx, data.pad_id, model.device())?;
        let h = model.forward_all(&b.ids, &b.mask, None)?.last_hidden;
        let first = h.narrow(1, 0, 1)?.squeeze(1)?.detach();
        for (k, &i) in idx.iter().enumerate() {
            rows[i] = Some(first.get(k)?);
        }
        done += idx.len();
        ctl.report(Progress {
            stage: Stage::Features,
            phase: "encode".into(),
            done,
            total: n,
            loss: None,
        });
    }
    let rows: Vec<Tensor> = rows.into_iter().flatten().collect();
    Ok(Tensor::stack(&rows, 0)?)
}

/// Trains the chosen weights in place; adapters are removed first.
pub fn train_base(
    model: &mut SeqClassifier,
    data: &Dataset,
    scope: BaseScope,
    cfg: &TrainConfig,
    ctl: &Control,
) -> Result<TrainReport> {
    let _compute = crate::runtime::enter();
    let start = std::time::Instant::now();
    model.clear_adapters();
    let n = model.num_adapted();
    let mut base = Vec::new();
    for (i, lin) in model.linears_mut().into_iter().enumerate() {
        if scope == BaseScope::Full || i + 2 >= n {
            base.extend(lin.make_trainable()?);
        }
    }
    let params = Params {
        base,
        ..Default::default()
    };
    let res = match scope {
        BaseScope::Full => train(
            model,
            data,
            cfg,
            &params,
            &Objective::CrossEntropy,
            "train-base",
            ctl,
        ),
        BaseScope::Head => first_token_states(model, data, ctl).and_then(|first| {
            let labels: Vec<u32> = data.examples.iter().map(|e| e.label).collect();
            let task = HeadTask {
                model,
                labels: Tensor::from_vec(labels, first.dim(0)?, first.device())?,
                first,
            };
            run(&task, cfg, &params, "train-base", ctl)
        }),
    };
    // Frozen again whatever happened, so the model is never left half-trainable.
    for lin in model.linears_mut() {
        lin.freeze();
    }
    // Whole time, encoding of the cached outputs included.
    res.map(|mut r| {
        r.seconds = start.elapsed().as_secs_f64();
        r
    })
}
