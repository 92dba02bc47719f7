//! Rows to records, for both stores. Both keep every integer as a signed 64-bit value (SQLite
//! INTEGER, PostgreSQL BIGINT); ours are u32/u64, converted here with range checks.
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{
    ClientRecord, CloseReason, Pool, Result, RoundRecord, RoundState, RunRecord, RunState,
    StoreError,
};

pub(super) fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value}")))
}

pub(super) fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value}")))
}

pub(super) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} too large")))
}

/// The four column types the stores read, by name: the one thing that differs between a
/// SQLite and a PostgreSQL row here, so the decoders below are written once.
pub(super) trait Columns {
    fn int(&self, name: &str) -> Result<i64>;
    fn opt_int(&self, name: &str) -> Result<Option<i64>>;
    fn text(&self, name: &str) -> Result<String>;
    fn opt_text(&self, name: &str) -> Result<Option<String>>;
    fn blob(&self, name: &str) -> Result<Vec<u8>>;
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn int(&self, name: &str) -> Result<i64> {
                Ok(self.try_get(name)?)
            }
            fn opt_int(&self, name: &str) -> Result<Option<i64>> {
                Ok(self.try_get(name)?)
            }
            fn text(&self, name: &str) -> Result<String> {
                Ok(self.try_get(name)?)
            }
            fn opt_text(&self, name: &str) -> Result<Option<String>> {
                Ok(self.try_get(name)?)
            }
            fn blob(&self, name: &str) -> Result<Vec<u8>> {
                Ok(self.try_get(name)?)
            }
        }
    };
}
columns_for!(SqliteRow);
columns_for!(PgRow);

pub(super) fn run_from_row(row: &impl Columns) -> Result<RunRecord> {
    Ok(RunRecord {
        id: row.text("id")?,
        config: row.text("config")?,
        // Stored as its two's-complement i64: both databases' integers are signed.
        seed: row.int("seed")? as u64,
        state: RunState::parse(&row.text("state")?)?,
        current_round: to_u32(row.int("current_round")?, "round")?,
        created_at: row.int("created_at")?,
    })
}

pub(super) fn client_from_row(row: &impl Columns) -> Result<ClientRecord> {
    Ok(ClientRecord {
        run_id: row.text("run_id")?,
        id: row.text("id")?,
        pool: Pool::parse(&row.text("pool")?)?,
        token_hash: row
            .blob("token_hash")?
            .try_into()
            .map_err(|_| StoreError::Corrupt("token hash length".into()))?,
        enrolled_at: row.int("enrolled_at")?,
    })
}

/// Decodes a row of either store's `ROUND_SELECT` (a round with its selection and update
/// tallies as `n_selected`, `n_reported`, `n_samples`).
pub(super) fn round_from_row(row: &impl Columns) -> Result<RoundRecord> {
    Ok(RoundRecord {
        run_id: row.text("run_id")?,
        round: to_u32(row.int("round")?, "round")?,
        state: RoundState::parse(&row.text("state")?)?,
        opened_at: row.int("opened_at")?,
        deadline_at: row.int("deadline_at")?,
        closing_at: row.opt_int("closing_at")?,
        closed_at: row.opt_int("closed_at")?,
        close_reason: row
            .opt_text("close_reason")?
            .map(|r| CloseReason::parse(&r))
            .transpose()?,
        selected: to_u32(row.int("n_selected")?, "selected")?,
        reported: to_u32(row.int("n_reported")?, "reported")?,
        total_samples: to_u64(row.int("n_samples")?, "samples")?,
    })
}

pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
