//! Low-rank adapters: BT-LoRA (plain LoRA = λ fixed at one), their priors and PEFT export.
pub mod bt_lora;
pub mod init;
pub mod peft;
pub mod priors;

pub use bt_lora::{BtLora, Lambda};
pub use init::{read_lambda, AdapterInit, LoraConfig};
pub use peft::{export_peft, export_peft_with_prefix, PeftExport};
pub use priors::{clamp_ste, prior_terms, PriorConfig, PriorTerm};
