//! FedL2P (Lee et al. 2023) as the FedP²EFT authors ran it as a baseline (method.md §6): LoRA at
//! the budget's rank on every layer, fine-tuned with one learning rate per A and per B matrix,
//! read off a client's features by a federated meta-net (`LrNet`, the authors' ClampLRNet) times
//! a federated base learning rate per matrix. The meta-net is trained on each client by a
//! first-order hypergradient through the last inner step (`meta`): the authors' own "FOMAML+"
//! path, chosen over their implicit-differentiation one (see `meta`'s notes).
pub mod config;
pub mod meta;
pub mod model;
pub mod net;

pub use config::Fedl2pConfig;
pub use meta::{lr_gradient, meta_step, meta_train, LastDirection, MetaClient, MetaReport};
pub use model::Fedl2p;
pub use net::{LrNet, LrNetMeta};
