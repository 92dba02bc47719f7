//! The client side of a FedP²EFT round, transport-free: stage 1 (BT-LoRA from the PSG's λ̂)
//! and stage 2 (the PSG regressed onto the learned λ). The HTTP client comes with the server.
//! Also the base model's own FedAvg (full fine-tuning), which every method starts from.
pub mod base;
pub mod convert;
#[cfg(feature = "client")]
pub mod http;
pub mod round;

pub use base::{fedavg_round, BaseRound, FedBaseConfig};
pub use round::{
    client_round, fedl2p_round, ClientUpdate, Fedl2pRoundConfig, Fedl2pUpdate, RoundConfig,
};
