//! The client side of a FedP²EFT round, transport-free: stage 1 (BT-LoRA from the PSG's λ̂)
//! and stage 2 (the PSG regressed onto the learned λ). The HTTP client comes with the server.
pub mod convert;
#[cfg(feature = "client")]
pub mod http;
pub mod round;

pub use round::{client_round, ClientUpdate, RoundConfig};
