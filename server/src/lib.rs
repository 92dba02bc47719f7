//! fedp2eft-server: the federation server. This slice: the store (SQLite) and the round
//! state machine's rules; the HTTP API follows on top of the wire crate.
pub mod round;
pub mod store;
