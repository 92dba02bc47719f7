//! fedp2eft-core: BT-LoRA, the PSG, budget pruning and on-device personalization.
pub mod data;
pub mod error;
pub mod home;
pub mod model;

pub use error::{Error, Result};
