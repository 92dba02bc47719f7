//! The embedded default store: one SQLite file in WAL mode.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction: it takes SQLite's single write lock up
//! front, so a read-then-write transaction can never fail half-way on a lock upgrade, and the
//! checks it reads stay true until it commits. `synchronous = FULL` makes each commit durable
//! before the method returns, which is what lets an upload be acknowledged only once stored.
//!
//! One server process per file: round locks (`Store::lock_round`) live in this process's memory.
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, Sqlite, Transaction};

use super::local_lock::LocalLocks;
use super::rows::{
    client_from_row, is_unique_violation, round_from_row, run_from_row, to_i64, to_u64,
};
use super::{
    ClientRecord, CloseReason, NewPsg, NewRound, NewUpdate, PsgRecord, PutOutcome, Result,
    RoundClose, RoundLock, RoundRecord, RoundState, RunRecord, RunState, Store, StoreError,
    UpdateSummary,
};

/// Selects a round with its selection and update tallies.
const ROUND_SELECT: &str = "SELECT r.*, \
    (SELECT COUNT(*) FROM selections s WHERE s.run_id = r.run_id AND s.round = r.round) AS n_selected, \
    (SELECT COUNT(*) FROM updates u WHERE u.run_id = r.run_id AND u.round = r.round) AS n_reported, \
    (SELECT COALESCE(SUM(u.num_samples), 0) FROM updates u \
        WHERE u.run_id = r.run_id AND u.round = r.round) AS n_samples \
    FROM rounds r";

/// Migrations are compiled in (no directory needed at run time, no sqlx macros).
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        include_str!("../../migrations/sqlite/0001_init.sql").into_sql_str(),
        false,
    )])
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    locks: LocalLocks,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`, or `sqlite::memory:`
    /// for tests) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            // Every connection to `:memory:` is its own empty database: keep exactly one.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(8)
        }
        .connect_with(options)
        .await?;
        migrator().run(&pool).await?;
        Ok(Self {
            pool,
            locks: LocalLocks::default(),
        })
    }

    /// The underlying pool, for operations outside the `Store` contract (backups, tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

async fn insert_psg(
    tx: &mut Transaction<'static, Sqlite>,
    run_id: &str,
    psg: &NewPsg,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO psgs (run_id, version, digest, bytes, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(run_id)
    .bind(i64::from(psg.version))
    .bind(&psg.digest)
    .bind(&psg.bytes)
    .bind(psg.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_round(
    tx: &mut Transaction<'static, Sqlite>,
    run_id: &str,
    round: &NewRound,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rounds (run_id, round, state, opened_at, deadline_at) \
         VALUES (?, ?, 'open', ?, ?)",
    )
    .bind(run_id)
    .bind(i64::from(round.round))
    .bind(round.opened_at)
    .bind(round.deadline_at)
    .execute(&mut **tx)
    .await?;
    for client in &round.selected {
        sqlx::query("INSERT INTO selections (run_id, round, client_id) VALUES (?, ?, ?)")
            .bind(run_id)
            .bind(i64::from(round.round))
            .bind(client)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_run(&self, run: &RunRecord, initial: &NewPsg) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO runs (id, config, seed, state, current_round, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.id)
        .bind(&run.config)
        .bind(run.seed as i64)
        .bind(run.state.as_str())
        .bind(i64::from(run.current_round))
        .bind(run.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(err) if is_unique_violation(&err) => return Err(StoreError::AlreadyExists),
            Err(err) => return Err(err.into()),
        }
        insert_psg(&mut tx, &run.id, initial).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn runs_in_state(&self, state: RunState) -> Result<Vec<RunRecord>> {
        sqlx::query("SELECT * FROM runs WHERE state = ? ORDER BY created_at, id")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(run_from_row)
            .collect()
    }

    async fn enroll(&self, client: &ClientRecord) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO clients (run_id, id, pool, token_hash, enrolled_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&client.run_id)
        .bind(&client.id)
        .bind(client.pool.as_str())
        .bind(&client.token_hash[..])
        .bind(client.enrolled_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyExists),
            Err(err) => Err(err.into()),
        }
    }

    async fn client(&self, run_id: &str, client_id: &str) -> Result<Option<ClientRecord>> {
        sqlx::query("SELECT * FROM clients WHERE run_id = ? AND id = ?")
            .bind(run_id)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(client_from_row)
            .transpose()
    }

    async fn seen_clients(&self, run_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT id FROM clients WHERE run_id = ? AND pool = 'seen' ORDER BY id")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    async fn pool_sizes(&self, run_id: &str) -> Result<(u64, u64)> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(pool = 'seen'), 0) AS seen, COALESCE(SUM(pool = 'unseen'), 0) AS unseen \
             FROM clients WHERE run_id = ?",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            to_u64(row.try_get("seen")?, "count")?,
            to_u64(row.try_get("unseen")?, "count")?,
        ))
    }

    async fn open_round(&self, run_id: &str, round: &NewRound) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let current = sqlx::query(
            "SELECT 1 FROM runs r WHERE r.id = ? AND r.state = 'running' AND r.current_round = ? \
             AND NOT EXISTS (SELECT 1 FROM rounds WHERE run_id = r.id AND round = r.current_round)",
        )
        .bind(run_id)
        .bind(i64::from(round.round))
        .fetch_optional(&mut *tx)
        .await?;
        if current.is_none() {
            return Ok(false); // dropping the transaction rolls it back
        }
        insert_round(&mut tx, run_id, round).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn round(&self, run_id: &str, round: u32) -> Result<Option<RoundRecord>> {
        let sql = format!("{ROUND_SELECT} WHERE r.run_id = ? AND r.round = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .bind(i64::from(round))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(round_from_row)
            .transpose()
    }

    async fn is_selected(&self, run_id: &str, round: u32, client_id: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM selections WHERE run_id = ? AND round = ? AND client_id = ?",
        )
        .bind(run_id)
        .bind(i64::from(round))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn update_digest(
        &self,
        run_id: &str,
        round: u32,
        client_id: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT digest FROM updates WHERE run_id = ? AND round = ? AND client_id = ?",
        )
        .bind(run_id)
        .bind(i64::from(round))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("digest")).transpose()?)
    }

    async fn psg(&self, run_id: &str, version: u32) -> Result<Option<PsgRecord>> {
        let row = sqlx::query("SELECT digest, bytes FROM psgs WHERE run_id = ? AND version = ?")
            .bind(run_id)
            .bind(i64::from(version))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(PsgRecord {
                version,
                digest: r.try_get("digest")?,
                bytes: r.try_get("bytes")?,
            })
        })
        .transpose()
    }

    async fn psg_digest(&self, run_id: &str, version: u32) -> Result<Option<String>> {
        let row = sqlx::query("SELECT digest FROM psgs WHERE run_id = ? AND version = ?")
            .bind(run_id)
            .bind(i64::from(version))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("digest")).transpose()?)
    }

    async fn put_update(&self, update: &NewUpdate) -> Result<PutOutcome> {
        let round = i64::from(update.round);
        let mut tx = self.write_tx().await?;
        let state = sqlx::query("SELECT state FROM rounds WHERE run_id = ? AND round = ?")
            .bind(&update.run_id)
            .bind(round)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(state) = state else {
            return Ok(PutOutcome::NoSuchRound);
        };
        let state = RoundState::parse(state.try_get("state")?)?;
        // An update already stored answers the same whatever the round's state now is, so a
        // client retrying after a lost response learns that its upload counted.
        let existing = sqlx::query(
            "SELECT digest FROM updates WHERE run_id = ? AND round = ? AND client_id = ?",
        )
        .bind(&update.run_id)
        .bind(round)
        .bind(&update.client_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            let digest: String = existing.try_get("digest")?;
            return Ok(if digest == update.digest {
                PutOutcome::Duplicate
            } else {
                PutOutcome::Conflict
            });
        }
        if state != RoundState::Open {
            return Ok(PutOutcome::RoundNotOpen);
        }
        let selected = sqlx::query(
            "SELECT 1 FROM selections WHERE run_id = ? AND round = ? AND client_id = ?",
        )
        .bind(&update.run_id)
        .bind(round)
        .bind(&update.client_id)
        .fetch_optional(&mut *tx)
        .await?;
        if selected.is_none() {
            return Ok(PutOutcome::NotSelected);
        }
        sqlx::query(
            "INSERT INTO updates (run_id, round, client_id, num_samples, digest, bytes, received_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&update.run_id)
        .bind(round)
        .bind(&update.client_id)
        .bind(to_i64(update.num_samples, "num_samples")?)
        .bind(&update.digest)
        .bind(&update.bytes)
        .bind(update.received_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PutOutcome::Stored)
    }

    async fn begin_closing(
        &self,
        run_id: &str,
        round: u32,
        now_ms: i64,
        reason: CloseReason,
    ) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE rounds SET state = 'closing', closing_at = ?, close_reason = ? \
             WHERE run_id = ? AND round = ? AND state = 'open'",
        )
        .bind(now_ms)
        .bind(reason.as_str())
        .bind(run_id)
        .bind(i64::from(round))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn updates(&self, run_id: &str, round: u32) -> Result<Vec<UpdateSummary>> {
        let rows = sqlx::query(
            "SELECT client_id, num_samples, digest FROM updates \
             WHERE run_id = ? AND round = ? ORDER BY client_id",
        )
        .bind(run_id)
        .bind(i64::from(round))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UpdateSummary {
                    client_id: r.try_get("client_id")?,
                    num_samples: to_u64(r.try_get("num_samples")?, "num_samples")?,
                    digest: r.try_get("digest")?,
                })
            })
            .collect()
    }

    async fn update_bytes(
        &self,
        run_id: &str,
        round: u32,
        client_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT bytes FROM updates WHERE run_id = ? AND round = ? AND client_id = ?",
        )
        .bind(run_id)
        .bind(i64::from(round))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("bytes")).transpose()?)
    }

    async fn finish_round(&self, close: &RoundClose) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE rounds SET state = ?, closed_at = ? \
             WHERE run_id = ? AND round = ? AND state = 'closing'",
        )
        .bind(close.outcome.state().as_str())
        .bind(close.closed_at)
        .bind(&close.run_id)
        .bind(i64::from(close.round))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Ok(false);
        }
        insert_psg(&mut tx, &close.run_id, &close.next_psg).await?;
        let state = if close.next_round.is_some() {
            "running"
        } else {
            "finished"
        };
        sqlx::query("UPDATE runs SET current_round = ?, state = ? WHERE id = ?")
            .bind(i64::from(close.round) + 1)
            .bind(state)
            .bind(&close.run_id)
            .execute(&mut *tx)
            .await?;
        if let Some(next) = &close.next_round {
            insert_round(&mut tx, &close.run_id, next).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn unfinished_rounds(&self) -> Result<Vec<RoundRecord>> {
        let sql = format!(
            "{ROUND_SELECT} WHERE r.state IN ('open', 'closing') ORDER BY r.deadline_at, r.run_id"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(round_from_row)
            .collect()
    }

    async fn lock_round(&self, run_id: &str, round: u32) -> Result<Option<Box<dyn RoundLock>>> {
        Ok(self.locks.try_lock(run_id, round))
    }
}
