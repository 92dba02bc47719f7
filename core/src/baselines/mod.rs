//! Per-client baselines run through the one training loop.
pub mod bt_lora;

pub use bt_lora::{learn_lambda, LearnedLambda, BASELINE_LAMBDA_INIT};
