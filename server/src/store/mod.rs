//! Persistence behind one trait, so handlers never see SQL and a PostgreSQL store can be added
//! next to the SQLite one without touching them.
//!
//! The trait is shaped around the round state machine's atomic steps rather than tables: each
//! method is one transaction (or one statement), and every state change is a compare-and-set
//! on the stored state, so several processes sharing one database could never both close a
//! round or accept an upload into a closed one.
mod api;
mod records;
mod sqlite;
mod sqlite_rows;
#[cfg(test)]
mod tests;

pub use api::{connect, Result, Store, StoreError};
pub use records::{
    ClientRecord, CloseReason, NewPsg, NewRound, NewUpdate, Pool, PsgRecord, PutOutcome,
    RoundClose, RoundOutcome, RoundRecord, RoundState, RunRecord, RunState, UpdateSummary,
};
pub use sqlite::SqliteStore;
