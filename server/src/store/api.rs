//! The `Store` trait, its error type and the URL dispatch.
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    ClientRecord, CloseReason, NewPsg, NewRound, NewUpdate, PgStore, PsgRecord, PutOutcome,
    RoundClose, RoundRecord, RunRecord, RunState, SqliteStore, UpdateSummary,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with this key exists already (run id, client id).
    #[error("already exists")]
    AlreadyExists,
    /// A stored value that this version of the server cannot read.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported database URL `{0}` (sqlite://PATH, postgres://… or postgresql://…)")]
    UnsupportedUrl(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheapest round trip to the database (health checks).
    async fn ping(&self) -> Result<()>;

    /// Inserts a running run together with its phi_0, atomically. `AlreadyExists` if the id is
    /// taken.
    async fn create_run(&self, run: &RunRecord, initial: &NewPsg) -> Result<()>;
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    /// Every run in `state`, oldest first.
    async fn runs_in_state(&self, state: RunState) -> Result<Vec<RunRecord>>;

    /// `AlreadyExists` if the client id is taken in this run.
    async fn enroll(&self, client: &ClientRecord) -> Result<()>;
    async fn client(&self, run_id: &str, client_id: &str) -> Result<Option<ClientRecord>>;
    /// Ids of the run's seen-pool clients in ascending order (the order sampling indexes into).
    async fn seen_clients(&self, run_id: &str) -> Result<Vec<String>>;
    /// (seen, unseen) enrolment counts.
    async fn pool_sizes(&self, run_id: &str) -> Result<(u64, u64)>;

    /// Opens round `round.round` with its selection iff it is the run's current round, the run
    /// is running and the round was never opened. False (nothing changed) otherwise, e.g.
    /// when another request opened it first.
    async fn open_round(&self, run_id: &str, round: &NewRound) -> Result<bool>;

    async fn round(&self, run_id: &str, round: u32) -> Result<Option<RoundRecord>>;
    async fn is_selected(&self, run_id: &str, round: u32, client_id: &str) -> Result<bool>;
    /// Digest of the client's stored update for this round, if any.
    async fn update_digest(
        &self,
        run_id: &str,
        round: u32,
        client_id: &str,
    ) -> Result<Option<String>>;
    async fn psg(&self, run_id: &str, version: u32) -> Result<Option<PsgRecord>>;
    /// The digest of phi_version without reading its bytes.
    async fn psg_digest(&self, run_id: &str, version: u32) -> Result<Option<String>>;

    /// Stores an update iff its round is `open`, the client is selected for it and has no update
    /// there yet — atomically with respect to `begin_closing`, so an update that is `Stored` is
    /// always part of what the round's closing sees. Durable when this returns.
    async fn put_update(&self, update: &NewUpdate) -> Result<PutOutcome>;

    /// `open` -> `closing` (uploads refused from here on). False if the round was not open:
    /// another caller (or process) is closing it.
    async fn begin_closing(
        &self,
        run_id: &str,
        round: u32,
        now_ms: i64,
        reason: CloseReason,
    ) -> Result<bool>;
    /// The round's updates, ordered by client id (a fixed order keeps FedAvg reproducible).
    async fn updates(&self, run_id: &str, round: u32) -> Result<Vec<UpdateSummary>>;
    /// One stored update's bytes.
    async fn update_bytes(
        &self,
        run_id: &str,
        round: u32,
        client_id: &str,
    ) -> Result<Option<Vec<u8>>>;
    /// `closing` -> `aggregated` | `failed` in ONE transaction with storing phi_{k+1}, advancing
    /// the run's current round, and either opening round k+1 (with its selection) or
    /// finishing the run. False if the round was not
    /// `closing` (someone else finished it); then nothing changes.
    async fn finish_round(&self, close: &RoundClose) -> Result<bool>;
    /// Every `open` or `closing` round of every run: what a (re)started server must look after.
    async fn unfinished_rounds(&self) -> Result<Vec<RoundRecord>>;

    /// The exclusive right to close round `round` of `run_id` — to move it to `closing` and
    /// finish it — among every process that shares this database. None while another holder
    /// has it. Released by `RoundLock::release`, by dropping the guard, or by the death of the
    /// holding process; so a round that is `closing` while its lock is free was left by a
    /// closer that failed, and whoever takes the lock next may finish it.
    async fn lock_round(&self, run_id: &str, round: u32) -> Result<Option<Box<dyn RoundLock>>>;
}

/// A held `Store::lock_round`.
#[async_trait]
pub trait RoundLock: Send {
    /// Releases the lock now (dropping it also releases it, perhaps a moment later).
    async fn release(self: Box<Self>);
}

/// Opens the store a database URL names: `sqlite:` URLs an embedded SQLite file, `postgres://`
/// and `postgresql://` ones a PostgreSQL database (which several server processes may share).
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}
