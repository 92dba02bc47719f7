//! Training the base model that personalization starts from (method.md: "Personalizing a model
//! whose head is random measures nothing"): encoder linears + pooler + classifier fine-tuned with
//! cross-entropy on the seen pool, centrally. Embeddings and layer norms stay frozen (the 250k-row
//! table of e5-small dominates memory and barely moves).
use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::model::SeqClassifier;
use crate::train::{train, Dataset, Objective, Params, TrainConfig, TrainReport};
use crate::Result;

/// Which weights the base training updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseScope {
    /// Pooler and classifier only: cheap, for quick runs.
    Head,
    /// Every linear layer (the paper's full fine-tuning, minus embeddings and layer norms).
    Full,
}

/// Trains the chosen weights in place; adapters are removed first.
pub fn train_base(
    model: &mut SeqClassifier,
    data: &Dataset,
    scope: BaseScope,
    cfg: &TrainConfig,
    ctl: &Control,
) -> Result<TrainReport> {
    model.clear_adapters();
    let mut base = Vec::new();
    let n = model.num_adapted();
    for (i, lin) in model.linears_mut().into_iter().enumerate() {
        if scope == BaseScope::Full || i + 2 >= n {
            base.extend(lin.make_trainable()?);
        }
    }
    let params = Params {
        base,
        ..Default::default()
    };
    let res = train(
        model,
        data,
        cfg,
        &params,
        &Objective::CrossEntropy,
        "train-base",
        ctl,
    );
    // Frozen again whatever happened, so the model is never left half-trainable.
    for lin in model.linears_mut() {
        lin.freeze();
    }
    res
}
