//! The one training loop, used by BT-LoRA stage 1, plain LoRA, the personalised fine-tune and
//! base-model training, and evaluation.
pub mod batch;
pub mod config;
pub mod eval;
pub mod trainer;

pub use batch::{chunks_by_length, encode_all, make_batch, Batch, Dataset, Encoded};
pub use config::TrainConfig;
pub use eval::{accuracy_of, evaluate, predict_all, Accuracy};
pub use trainer::{
    batch_loss, clip_grad_norm, run, run_with, train, BatchLoss, ModelTask, NoHook, Objective,
    Params, StepHook,
};
pub use trainer::{Task, TrainReport};
