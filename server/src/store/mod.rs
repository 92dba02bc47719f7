//! Persistence behind one trait, so handlers never see SQL: SQLite (embedded, one process) and
//! PostgreSQL (shared by any number of server processes).
//!
//! The trait is shaped around the round state machine's atomic steps rather than tables: each
//! method is one transaction (or one statement), and every state change is a compare-and-set
//! on the stored state, so several processes sharing one database can never both close a
//! round or accept an upload into a closed one. `lock_round` makes the one process that closes
//! a round also the only one that aggregates it.
mod api;
mod local_lock;
mod postgres;
mod postgres_store;
mod records;
mod rows;
mod sqlite;
#[cfg(test)]
mod tests;

pub use api::{connect, Result, RoundLock, Store, StoreError};
pub use postgres::PgStore;
pub use records::{
    ClientRecord, CloseReason, NewPsg, NewRound, NewUpdate, Pool, PsgRecord, PutOutcome,
    RoundClose, RoundOutcome, RoundRecord, RoundState, RunRecord, RunState, UpdateSummary,
};
pub use sqlite::SqliteStore;
