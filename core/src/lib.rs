//! fedp2eft-core: BT-LoRA, the PSG, budget pruning and on-device personalization.
pub mod error;
pub mod model;

pub use error::{Error, Result};
