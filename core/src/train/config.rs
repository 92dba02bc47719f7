//! Hyper-parameters of the one training loop; defaults are the authors' (method.md §2, §4).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Local epochs: stage 1, the BT-LoRA baseline and the personalised fine-tune all use 2.
    pub epochs: usize,
    /// 32 for the paper's mBERT runs.
    pub batch_size: usize,
    /// Examples per forward and backward pass when fewer than `batch_size`: the step's
    /// gradient is accumulated over micro-batches of this size, the same step with a fraction
    /// of the activation memory (a phone's budget). None: the whole batch at once.
    pub micro_batch: Option<usize>,
    /// Token limit per example (specials included); the paper uses 128 (XNLI) / 256.
    pub max_len: usize,
    /// AdamW learning rate of LoRA A and B (task_lr 1e-4).
    pub lr_ab: f64,
    /// AdamW learning rate of λ (bts_lr 1e-2).
    pub lr_lambda: f64,
    /// AdamW learning rate of base weights when the base model itself is trained (5e-5).
    pub lr_base: f64,
    pub weight_decay: f64,
    /// Global-norm clipping of A/B (and base) gradients, never λ: HF Trainer's 1.0.
    pub max_grad_norm: Option<f64>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Seed of the per-epoch shuffling (HF Trainer's default 42).
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 2,
            batch_size: 32,
            micro_batch: None,
            max_len: 128,
            lr_ab: 1e-4,
            lr_lambda: 1e-2,
            lr_base: 5e-5,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            seed: 42,
        }
    }
}
