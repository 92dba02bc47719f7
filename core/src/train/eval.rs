//! Accuracy of a classifier on encoded examples.
use serde::Serialize;

use super::batch::{chunks_by_length, make_batch, Dataset};
use crate::control::{Control, Progress, Stage};
use crate::model::SeqClassifier;
use crate::Result;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Accuracy {
    pub correct: usize,
    pub total: usize,
}

impl Accuracy {
    /// Percentage; 0 for an empty set.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }
}

/// Counts correct predictions; batches are sorted by length to waste little on padding.
pub fn evaluate(
    model: &SeqClassifier,
    data: &Dataset,
    batch_size: usize,
    ctl: &Control,
) -> Result<Accuracy> {
    let pred = predict_all(model, data, batch_size, ctl)?;
    Ok(accuracy_of(data, &pred))
}

/// Accuracy of predictions given in data order.
pub fn accuracy_of(data: &Dataset, pred: &[u32]) -> Accuracy {
    Accuracy {
        correct: data
            .examples
            .iter()
            .zip(pred)
            .filter(|(e, &p)| e.label == p)
            .count(),
        total: data.examples.len(),
    }
}

/// The predicted class of every example, in data order (per-item results for paired tests).
pub fn predict_all(
    model: &SeqClassifier,
    data: &Dataset,
    batch_size: usize,
    ctl: &Control,
) -> Result<Vec<u32>> {
    let _compute = crate::runtime::enter();
    let dev = model.device();
    let (pad_id, data) = (data.pad_id, data.examples);
    let mut out = vec![0u32; data.len()];
    let mut done = 0;
    for idx in chunks_by_length(data, batch_size) {
        ctl.cancel.check()?;
        let b = make_batch(data, &idx, pad_id, dev)?;
        let pred = model.predict(&b.ids, &b.mask)?;
        for (&i, p) in idx.iter().zip(pred) {
            out[i] = p;
        }
        done += idx.len();
        ctl.report(Progress {
            stage: Stage::Evaluate,
            phase: "evaluate".into(),
            done,
            total: data.len(),
            loss: None,
        });
    }
    Ok(out)
}
