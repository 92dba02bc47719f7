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
    let _compute = crate::runtime::enter();
    let dev = model.device();
    let (pad_id, data) = (data.pad_id, data.examples);
    let mut acc = Accuracy::default();
    for idx in chunks_by_length(data, batch_size) {
        ctl.cancel.check()?;
        let b = make_batch(data, &idx, pad_id, dev)?;
        let pred = model.predict(&b.ids, &b.mask)?;
        acc.correct += idx
            .iter()
            .zip(pred)
            .filter(|(&i, p)| data[i].label == *p)
            .count();
        acc.total += idx.len();
        ctl.report(Progress {
            stage: Stage::Evaluate,
            phase: "evaluate".into(),
            done: acc.total,
            total: data.len(),
            loss: None,
        });
    }
    Ok(acc)
}
