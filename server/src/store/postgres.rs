//! The shared store: PostgreSQL, for several server processes behind one address.
//!
//! Same contract and same SQL shape as the SQLite store, with PostgreSQL's concurrency made
//! explicit, since here transactions of other processes really do interleave (READ COMMITTED):
//! * state changes are `UPDATE … WHERE state = <expected> RETURNING`, so of two processes
//!   racing to close a round exactly one sees its row come back;
//! * an upload reads its round `FOR SHARE`, which `begin_closing`'s UPDATE must wait for: an
//!   upload either commits before the round turns `closing` (and the closer, reading after
//!   that, sees it) or sees `closing` and is refused — never stored-but-missed;
//! * opening a round locks the run's row, so two first polls cannot both open it;
//! * round locks are session-level advisory locks on a connection of their own (`RoundLock`),
//!   which PostgreSQL releases by itself when the holding process dies.
//!
//! Commits are durable when they return (PostgreSQL's default `synchronous_commit = on`).
use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, PgTransaction, SqlSafeStr};

use super::{Result, RoundLock};

/// Connections per process. Each upload holds one for its transaction (a PSG-sized insert);
/// several processes share the database's `max_connections` (100 by default).
const MAX_CONNECTIONS: u32 = 16;

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        include_str!("../../migrations/postgres/0001_init.sql").into_sql_str(),
        false,
    )])
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    /// To open the dedicated connection that holds a round lock (`lock_options`).
    lock_options: Arc<PgConnectOptions>,
    /// The schema our tables live in: part of every round lock's key, because advisory locks
    /// are per database, not per schema, and one database may hold several servers' schemas.
    schema: String,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`; a schema other than
    /// `public` via `?options=-c%20search_path%3DNAME`) and brings the schema up to date.
    /// Several processes may do this at once: sqlx serialises migrations with an advisory lock.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await?;
        migrator().run(&pool).await?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        Ok(Self {
            pool,
            lock_options: Arc::new(lock_options(options)),
            schema: schema.unwrap_or_default(),
        })
    }

    /// The underlying pool, for operations outside the `Store` contract (tests, maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn begin(&self) -> Result<PgTransaction<'static>> {
        Ok(self.pool.begin().await?)
    }

    /// The advisory lock key of a round: (hash of schema and run id, round). A collision of
    /// two runs' hashes only makes one closer wait for the other's next deadline check.
    fn lock_key(&self, run_id: &str, round: u32) -> (i32, i32) {
        let digest = Sha256::new()
            .chain_update(self.schema.as_bytes())
            .chain_update([0])
            .chain_update(run_id.as_bytes())
            .finalize();
        let run = i32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
        // A bijection of u32 onto i32: every round has its own key.
        (run, round as i32)
    }

    /// `Store::lock_round`: a session-level advisory lock on a new connection that lives as
    /// long as the lock. Not a pooled connection: the lock must end with the connection, and a
    /// pooled one would outlive the guard. If the process dies, PostgreSQL sees the socket
    /// close and releases the lock, so another process may take over the round at once.
    pub(super) async fn try_lock_round(
        &self,
        run_id: &str,
        round: u32,
    ) -> Result<Option<Box<dyn RoundLock>>> {
        let (run_key, round_key) = self.lock_key(run_id, round);
        let mut conn = PgConnection::connect_with(&self.lock_options).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(run_key)
            .bind(round_key)
            .fetch_one(&mut conn)
            .await?;
        if locked {
            Ok(Some(Box::new(AdvisoryLock { conn })))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

/// A lock connection asks the server for TCP keepalives. A process that dies closes its socket
/// and frees its locks at once; a whole machine that vanishes closes nothing, and without
/// keepalives PostgreSQL would keep its locks for the OS default of two hours. With these, the
/// server drops the session — and a dead closer's round is taken over — within about a minute.
fn lock_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        ("tcp_keepalives_idle", "30"),
        ("tcp_keepalives_interval", "10"),
        ("tcp_keepalives_count", "3"),
    ])
}

/// A held advisory lock: the connection that took it.
struct AdvisoryLock {
    conn: PgConnection,
}

#[async_trait]
impl RoundLock for AdvisoryLock {
    async fn release(self: Box<Self>) {
        // Ending the session releases its advisory locks; a failure means the connection is
        // gone already, which released them too.
        let _ = self.conn.close().await;
    }
}
