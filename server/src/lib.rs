//! fedp2eft-server: the federation server. Runs are created with their initial PSG, clients
//! enrolled into the seen or unseen pool, and rounds open, collect updates, close and average
//! them (FedAvg, from the wire crate) with every step committed to the store first.
//! `app(state)` is the whole HTTP API; `serve` runs it with the deadline task.
pub mod auth;
pub mod close;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod round;
mod routes;
pub mod serve;
pub mod state;
pub mod store;

pub use config::Config;
pub use error::ApiError;
pub use routes::app;
pub use serve::{serve, serve_on, shutdown_signal, ServeError};
pub use state::AppState;
