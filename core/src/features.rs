//! PSG input features: mean and standard deviation of every adapted linear layer's input over
//! the client's local data, merged exactly in f64 across batches.
//!
//! As in the authors' code the statistics run over ALL scalar elements of the input (batch ×
//! tokens × features), padding positions included, with the LoRA branch off; the vector is
//! interleaved (mean_0, sd_0, mean_1, sd_1, …) with sd = sqrt(var_unbiased + 1e-5).
use candle_core::{DType, Tensor};

use crate::control::{Control, Progress, Stage};
use crate::model::SeqClassifier;
use crate::train::{make_batch, Dataset};
use crate::{Error, Result};

/// Batch size of feature extraction (the authors iterate the train set in batches of 4).
pub const FEATURE_BATCH: usize = 4;

/// Runs the model over `data` in dataset order with every adapter off (the authors set λ = 0)
/// and returns the PSG input vector.
pub fn extract(model: &SeqClassifier, data: &Dataset, ctl: &Control) -> Result<Vec<f32>> {
    let _compute = crate::runtime::enter();
    if data.examples.is_empty() {
        return Err(Error::EmptyData(
            "no examples to compute PSG features from".into(),
        ));
    }
    let mut base = model.clone();
    base.clear_adapters();
    let mut stats = FeatureStats::new(base.num_adapted());
    let order: Vec<usize> = (0..data.examples.len()).collect();
    let dev = model.device();
    for (i, idx) in order.chunks(FEATURE_BATCH).enumerate() {
        ctl.cancel.check()?;
        let b = make_batch(data.examples, idx, data.pad_id, dev)?;
        base.forward_all(&b.ids, &b.mask, Some(&mut stats))?;
        ctl.report(Progress {
            stage: Stage::Features,
            phase: "features".into(),
            done: (i * FEATURE_BATCH + idx.len()).min(order.len()),
            total: order.len(),
            loss: None,
        });
    }
    Ok(stats.to_vector())
}

/// Running (count, mean, M2) per layer; Chan's pairwise merge is exact for unbiased variance.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    count: Vec<f64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

/// The variance floor added before the square root (authors' 1e-5).
pub const SD_EPS: f64 = 1e-5;

impl FeatureStats {
    pub fn new(num_layers: usize) -> Self {
        Self {
            count: vec![0.0; num_layers],
            mean: vec![0.0; num_layers],
            m2: vec![0.0; num_layers],
        }
    }

    pub fn num_layers(&self) -> usize {
        self.count.len()
    }

    /// Merges every element of `x` into layer `index`'s statistics (the batch's mean and M2
    /// by two passes in f64, then Chan's merge).
    pub fn record(&mut self, index: usize, x: &Tensor) -> Result<()> {
        let v = x
            .detach()
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        if v.is_empty() {
            return Ok(());
        }
        let m = v.len() as f64;
        let mean_y = sum_f64(&v, |x| x) / m;
        let m2_y = sum_f64(&v, |x| (x - mean_y) * (x - mean_y));
        let (n, mean_x) = (self.count[index], self.mean[index]);
        let tot = n + m;
        let delta = mean_y - mean_x;
        self.mean[index] = mean_x + delta * m / tot;
        self.m2[index] += m2_y + delta * delta * n * m / tot;
        self.count[index] = tot;
        Ok(())
    }

    /// Mean and unbiased variance of layer `index`.
    pub fn mean_var(&self, index: usize) -> (f64, f64) {
        let n = self.count[index];
        let var = if n > 1.0 {
            self.m2[index] / (n - 1.0)
        } else {
            0.0
        };
        (self.mean[index], var)
    }

    /// The PSG input: interleaved (mean, sqrt(var + 1e-5)) per layer, in module order.
    pub fn to_vector(&self) -> Vec<f32> {
        (0..self.num_layers())
            .flat_map(|i| {
                let (m, v) = self.mean_var(i);
                [m as f32, (v + SD_EPS).sqrt() as f32]
            })
            .collect()
    }

    /// True once every layer has seen at least one element.
    pub fn complete(&self) -> bool {
        self.count.iter().all(|&c| c > 0.0)
    }
}

/// Σ f(x) in f64 over eight partial sums (which the compiler can keep in vector registers).
fn sum_f64(v: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x as f64);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| f(x as f64)).sum();
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn streaming_merge_equals_two_pass_statistics() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let data: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32).sin() * 3.0 + 1.5)
            .collect();
        let mut s = FeatureStats::new(1);
        // Uneven batches, as the last batch of a client usually is.
        for chunk in data.chunks(7).collect::<Vec<_>>().chunks(13) {
            let flat: Vec<f32> = chunk.iter().flat_map(|c| c.iter().copied()).collect();
            let n = flat.len();
            s.record(0, &Tensor::from_vec(flat, n, &dev)?)?;
        }
        let n = data.len() as f64;
        let mean = data.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = data.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let (m, v) = s.mean_var(0);
        assert!((m - mean).abs() < 1e-12, "{m} vs {mean}");
        assert!((v - var).abs() < 1e-10, "{v} vs {var}");
        let f = s.to_vector();
        assert!((f[1] as f64 - (var + SD_EPS).sqrt()).abs() < 1e-6);
        Ok(())
    }
}
