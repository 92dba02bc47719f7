//! fedp2eft-core: BT-LoRA, the PSG, budget pruning and on-device personalization.
pub mod adapter;
pub mod control;
pub mod data;
pub mod error;
pub mod features;
pub mod home;
pub mod model;
pub mod train;

pub use control::{CancelToken, Control, Progress, Stage};
pub use error::{Error, Result};
