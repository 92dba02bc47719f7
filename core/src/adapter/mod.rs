//! Low-rank adapters: BT-LoRA (plain LoRA = λ fixed at one), their priors and PEFT export.
pub mod bt_lora;
pub mod init;
pub mod priors;

pub use bt_lora::{BtLora, Lambda};
pub use init::{read_lambda, AdapterInit, LoraConfig};
pub use priors::{clamp_ste, prior_terms, PriorConfig, PriorTerm};
