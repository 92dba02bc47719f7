//! Rows of the SQLite store to records and back: SQLite integers are i64, ours are u32/u64.
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

pub(super) fn run_from_row(row: &SqliteRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        config: row.try_get("config")?,
        // Stored as its two's-complement i64: SQLite integers are signed.
        seed: row.try_get::<i64, _>("seed")? as u64,
        state: RunState::parse(row.try_get("state")?)?,
        current_round: to_u32(row.try_get("current_round")?, "round")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn client_from_row(row: &SqliteRow) -> Result<ClientRecord> {
    let hash: Vec<u8> = row.try_get("token_hash")?;
    Ok(ClientRecord {
        run_id: row.try_get("run_id")?,
        id: row.try_get("id")?,
        pool: Pool::parse(row.try_get("pool")?)?,
        token_hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("token hash length".into()))?,
        enrolled_at: row.try_get("enrolled_at")?,
    })
}

/// Selects a round with its selection and update tallies.
pub(super) const ROUND_SELECT: &str = "SELECT r.*, \
    (SELECT COUNT(*) FROM selections s WHERE s.run_id = r.run_id AND s.round = r.round) AS n_selected, \
    (SELECT COUNT(*) FROM updates u WHERE u.run_id = r.run_id AND u.round = r.round) AS n_reported, \
    (SELECT COALESCE(SUM(u.num_samples), 0) FROM updates u \
        WHERE u.run_id = r.run_id AND u.round = r.round) AS n_samples \
    FROM rounds r";

pub(super) fn round_from_row(row: &SqliteRow) -> Result<RoundRecord> {
    Ok(RoundRecord {
        run_id: row.try_get("run_id")?,
        round: to_u32(row.try_get("round")?, "round")?,
        state: RoundState::parse(row.try_get("state")?)?,
        opened_at: row.try_get("opened_at")?,
        deadline_at: row.try_get("deadline_at")?,
        closing_at: row.try_get("closing_at")?,
        closed_at: row.try_get("closed_at")?,
        close_reason: row
            .try_get::<Option<String>, _>("close_reason")?
            .map(|r| CloseReason::parse(&r))
            .transpose()?,
        selected: to_u32(row.try_get("n_selected")?, "selected")?,
        reported: to_u32(row.try_get("n_reported")?, "reported")?,
        total_samples: to_u64(row.try_get("n_samples")?, "samples")?,
    })
}

pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
