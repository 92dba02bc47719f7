//! fedp2eft-core: BT-LoRA, the PSG, budget pruning and on-device personalization.
pub mod adapter;
pub mod control;
pub mod data;
pub mod error;
pub mod evaluation;
pub mod features;
pub mod federated;
pub mod home;
pub mod kernels;
pub mod mem;
pub mod method;
pub mod model;
pub mod personalize;
pub mod prune;
pub mod psg;
pub mod runtime;
pub mod stats;
pub mod train;
pub mod train_base;
pub mod var_file;

pub use control::{CancelToken, Control, Progress, Stage};
pub use error::{Error, Result};
