//! AdaLoRA (Zhang et al. 2023) as HF peft implements it: SVD-form adapters P·Λ·Q whose
//! singular values Λ are pruned during training to a budget that falls on a cubic schedule,
//! by sensitivity importance smoothed with two EMAs.
pub mod allocator;
pub mod config;
pub mod model;
pub mod orthogonal;

pub use allocator::{AllocatorConfig, RankAllocator, Schedule, Triplet};
pub use config::AdaLoraConfig;
pub use model::AdaLora;
pub use orthogonal::orthogonal_penalty;
