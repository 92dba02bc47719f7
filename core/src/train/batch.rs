//! Tokenization and padding-aware batching: each batch is padded to its longest example only.
use candle_core::{Device, Tensor};

use crate::data::Example;
use crate::model::Tokenize;
use crate::{Error, Result};

/// One example as token ids with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub label: u32,
}

/// Encoded examples and the id that pads them.
#[derive(Debug, Clone, Copy)]
pub struct Dataset<'a> {
    pub examples: &'a [Encoded],
    pub pad_id: u32,
}

/// A padded batch on a device.
pub struct Batch {
    /// (batch, seq) u32
    pub ids: Tensor,
    /// (batch, seq) u32: 1 for tokens, 0 for padding
    pub mask: Tensor,
    /// (batch,) u32
    pub labels: Tensor,
    pub size: usize,
    /// Number of real (non-padding) tokens.
    pub tokens: usize,
}

/// Tokenizes a data set, checking every label against the head.
pub fn encode_all(
    examples: &[Example],
    tok: &dyn Tokenize,
    max_len: usize,
    num_labels: usize,
) -> Result<Vec<Encoded>> {
    examples
        .iter()
        .map(|e| {
            if e.label >= num_labels {
                return Err(Error::Label {
                    label: e.label,
                    num_labels,
                });
            }
            Ok(Encoded {
                ids: tok.encode(&e.text, max_len)?,
                label: e.label as u32,
            })
        })
        .collect()
}

/// Builds the batch of `data[idx]` for each idx, padded with `pad` to the longest.
pub fn make_batch(data: &[Encoded], idx: &[usize], pad: u32, dev: &Device) -> Result<Batch> {
    let len = idx
        .iter()
        .map(|&i| data[i].ids.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut ids = Vec::with_capacity(idx.len() * len);
    let mut mask = Vec::with_capacity(idx.len() * len);
    let mut tokens = 0;
    for &i in idx {
        let e = &data[i].ids;
        tokens += e.len();
        ids.extend_from_slice(e);
        ids.extend(std::iter::repeat_n(pad, len - e.len()));
        mask.extend(std::iter::repeat_n(1u32, e.len()));
        mask.extend(std::iter::repeat_n(0u32, len - e.len()));
    }
    let labels: Vec<u32> = idx.iter().map(|&i| data[i].label).collect();
    Ok(Batch {
        ids: Tensor::from_vec(ids, (idx.len(), len), dev)?,
        mask: Tensor::from_vec(mask, (idx.len(), len), dev)?,
        labels: Tensor::from_vec(labels, idx.len(), dev)?,
        size: idx.len(),
        tokens,
    })
}

/// Consecutive index chunks of `order`.
pub fn chunks(order: &[usize], batch_size: usize) -> impl Iterator<Item = &[usize]> {
    order.chunks(batch_size.max(1))
}

/// Index chunks of `batch_size` after sorting by length, so batches waste little on padding
/// (inference only: training keeps its seeded shuffle).
pub fn chunks_by_length(data: &[Encoded], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| data[i].ids.len());
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}
