//! `Store` for `PgStore`: the SQLite store's statements in PostgreSQL's dialect, with the row
//! locks that make them safe between processes (see `postgres.rs` for the reasoning).
use async_trait::async_trait;
use sqlx::{PgTransaction, Row};

use super::rows::{
    client_from_row, is_unique_violation, round_from_row, run_from_row, to_i64, to_u64,
};
use super::{
    ClientRecord, CloseReason, NewPsg, NewRound, NewUpdate, PgStore, PsgRecord, PutOutcome, Result,
    RoundClose, RoundLock, RoundRecord, RoundState, RunRecord, RunState, Store, StoreError,
    UpdateSummary,
};

/// A round with its selection and update tallies (COUNT is BIGINT; SUM of BIGINT is NUMERIC,
/// hence the cast).
const ROUND_SELECT: &str = "SELECT r.*, \
    (SELECT COUNT(*) FROM selections s WHERE s.run_id = r.run_id AND s.round = r.round) AS n_selected, \
    (SELECT COUNT(*) FROM updates u WHERE u.run_id = r.run_id AND u.round = r.round) AS n_reported, \
    (SELECT COALESCE(SUM(u.num_samples), 0)::BIGINT FROM updates u \
        WHERE u.run_id = r.run_id AND u.round = r.round) AS n_samples \
    FROM rounds r";

async fn insert_psg(tx: &mut PgTransaction<'static>, run_id: &str, psg: &NewPsg) -> Result<()> {
    sqlx::query(
        "INSERT INTO psgs (run_id, version, digest, bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
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
    tx: &mut PgTransaction<'static>,
    run_id: &str,
    round: &NewRound,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rounds (run_id, round, state, opened_at, deadline_at) \
         VALUES ($1, $2, 'open', $3, $4)",
    )
    .bind(run_id)
    .bind(i64::from(round.round))
    .bind(round.opened_at)
    .bind(round.deadline_at)
    .execute(&mut **tx)
    .await?;
    // One statement for the whole selection: a round may select thousands of clients.
    sqlx::query(
        "INSERT INTO selections (run_id, round, client_id) SELECT $1, $2, unnest($3::TEXT[])",
    )
    .bind(run_id)
    .bind(i64::from(round.round))
    .bind(&round.selected)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The digest of a client's update in a round, read inside `tx`.
async fn stored_digest(
    tx: &mut PgTransaction<'static>,
    update: &NewUpdate,
) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT digest FROM updates WHERE run_id = $1 AND round = $2 AND client_id = $3",
    )
    .bind(&update.run_id)
    .bind(i64::from(update.round))
    .bind(&update.client_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| r.try_get("digest")).transpose()?)
}

fn same_or_conflict(stored: &str, update: &NewUpdate) -> PutOutcome {
    if stored == update.digest {
        PutOutcome::Duplicate
    } else {
        PutOutcome::Conflict
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_run(&self, run: &RunRecord, initial: &NewPsg) -> Result<()> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO runs (id, config, seed, state, current_round, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
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
        sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn runs_in_state(&self, state: RunState) -> Result<Vec<RunRecord>> {
        sqlx::query("SELECT * FROM runs WHERE state = $1 ORDER BY created_at, id")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(run_from_row)
            .collect()
    }

    async fn enroll(&self, client: &ClientRecord) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO clients (run_id, id, pool, token_hash, enrolled_at) \
             VALUES ($1, $2, $3, $4, $5)",
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
        sqlx::query("SELECT * FROM clients WHERE run_id = $1 AND id = $2")
            .bind(run_id)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(client_from_row)
            .transpose()
    }

    async fn seen_clients(&self, run_id: &str) -> Result<Vec<String>> {
        // COLLATE "C": byte order, the order SQLite sorts in, whatever the database's locale;
        // the seeded selection indexes into this list.
        let rows = sqlx::query(
            "SELECT id FROM clients WHERE run_id = $1 AND pool = 'seen' ORDER BY id COLLATE \"C\"",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    async fn pool_sizes(&self, run_id: &str) -> Result<(u64, u64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE pool = 'seen') AS seen, \
             COUNT(*) FILTER (WHERE pool = 'unseen') AS unseen FROM clients WHERE run_id = $1",
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
        let mut tx = self.begin().await?;
        // The run's row lock serialises openers (and `finish_round`, which advances the run).
        let current = sqlx::query(
            "SELECT 1 FROM runs WHERE id = $1 AND state = 'running' AND current_round = $2 \
             FOR UPDATE",
        )
        .bind(run_id)
        .bind(i64::from(round.round))
        .fetch_optional(&mut *tx)
        .await?;
        if current.is_none() {
            return Ok(false); // dropping the transaction rolls it back
        }
        // A statement after the lock sees what a previous holder committed.
        let exists = sqlx::query("SELECT 1 FROM rounds WHERE run_id = $1 AND round = $2")
            .bind(run_id)
            .bind(i64::from(round.round))
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(false);
        }
        insert_round(&mut tx, run_id, round).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn round(&self, run_id: &str, round: u32) -> Result<Option<RoundRecord>> {
        let sql = format!("{ROUND_SELECT} WHERE r.run_id = $1 AND r.round = $2");
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
            "SELECT 1 FROM selections WHERE run_id = $1 AND round = $2 AND client_id = $3",
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
            "SELECT digest FROM updates WHERE run_id = $1 AND round = $2 AND client_id = $3",
        )
        .bind(run_id)
        .bind(i64::from(round))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("digest")).transpose()?)
    }

    async fn psg(&self, run_id: &str, version: u32) -> Result<Option<PsgRecord>> {
        let row = sqlx::query("SELECT digest, bytes FROM psgs WHERE run_id = $1 AND version = $2")
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
        let row = sqlx::query("SELECT digest FROM psgs WHERE run_id = $1 AND version = $2")
            .bind(run_id)
            .bind(i64::from(version))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("digest")).transpose()?)
    }

    async fn put_update(&self, update: &NewUpdate) -> Result<PutOutcome> {
        let round = i64::from(update.round);
        let mut tx = self.begin().await?;
        // FOR SHARE: concurrent uploads proceed together, but `begin_closing`'s UPDATE waits
        // until they commit, and an upload that comes after it waits for the closing to commit
        // and then reads `closing`. Nothing stored here can miss the aggregate.
        let state =
            sqlx::query("SELECT state FROM rounds WHERE run_id = $1 AND round = $2 FOR SHARE")
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
        if let Some(stored) = stored_digest(&mut tx, update).await? {
            return Ok(same_or_conflict(&stored, update));
        }
        if state != RoundState::Open {
            return Ok(PutOutcome::RoundNotOpen);
        }
        let selected = sqlx::query(
            "SELECT 1 FROM selections WHERE run_id = $1 AND round = $2 AND client_id = $3",
        )
        .bind(&update.run_id)
        .bind(round)
        .bind(&update.client_id)
        .fetch_optional(&mut *tx)
        .await?;
        if selected.is_none() {
            return Ok(PutOutcome::NotSelected);
        }
        // Two copies of one upload racing (a retry through another process): the second waits
        // for the first to commit, then inserts nothing and reads what the first stored.
        let inserted = sqlx::query(
            "INSERT INTO updates \
             (run_id, round, client_id, num_samples, digest, bytes, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1",
        )
        .bind(&update.run_id)
        .bind(round)
        .bind(&update.client_id)
        .bind(to_i64(update.num_samples, "num_samples")?)
        .bind(&update.digest)
        .bind(&update.bytes)
        .bind(update.received_at)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            // None only if that row was deleted again meanwhile: refuse rather than claim that
            // this upload counted.
            let stored = stored_digest(&mut tx, update).await?;
            return Ok(stored.map_or(PutOutcome::Conflict, |d| same_or_conflict(&d, update)));
        }
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
            "UPDATE rounds SET state = 'closing', closing_at = $1, close_reason = $2 \
             WHERE run_id = $3 AND round = $4 AND state = 'open' RETURNING round",
        )
        .bind(now_ms)
        .bind(reason.as_str())
        .bind(run_id)
        .bind(i64::from(round))
        .fetch_optional(&self.pool)
        .await?;
        Ok(changed.is_some())
    }

    async fn updates(&self, run_id: &str, round: u32) -> Result<Vec<UpdateSummary>> {
        let rows = sqlx::query(
            "SELECT client_id, num_samples, digest FROM updates \
             WHERE run_id = $1 AND round = $2 ORDER BY client_id COLLATE \"C\"",
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
            "SELECT bytes FROM updates WHERE run_id = $1 AND round = $2 AND client_id = $3",
        )
        .bind(run_id)
        .bind(i64::from(round))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("bytes")).transpose()?)
    }

    async fn finish_round(&self, close: &RoundClose) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE rounds SET state = $1, closed_at = $2 \
             WHERE run_id = $3 AND round = $4 AND state = 'closing' RETURNING round",
        )
        .bind(close.outcome.state().as_str())
        .bind(close.closed_at)
        .bind(&close.run_id)
        .bind(i64::from(close.round))
        .fetch_optional(&mut *tx)
        .await?;
        if changed.is_none() {
            return Ok(false);
        }
        insert_psg(&mut tx, &close.run_id, &close.next_psg).await?;
        let state = if close.next_round.is_some() {
            "running"
        } else {
            "finished"
        };
        sqlx::query("UPDATE runs SET current_round = $1, state = $2 WHERE id = $3")
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
            "{ROUND_SELECT} WHERE r.state IN ('open', 'closing') \
             ORDER BY r.deadline_at, r.run_id COLLATE \"C\""
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(round_from_row)
            .collect()
    }

    async fn lock_round(&self, run_id: &str, round: u32) -> Result<Option<Box<dyn RoundLock>>> {
        self.try_lock_round(run_id, round).await
    }
}
