//! The store a test runs against: each test gets a fresh, empty database of its own, in SQLite
//! or in PostgreSQL, so every server test runs once per store (`store_tests!`).
//!
//! PostgreSQL comes from `FEDP2EFT_TEST_DATABASE_URL`; each test makes its own schema there
//! (unique name, so tests run in parallel) and drops it when done. If the variable is unset the
//! PostgreSQL tests fail — they never pass without having run.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fedp2eft_server::store::{PgStore, SqliteStore, Store};
use sqlx::{Connection, PgConnection, Row};

pub const DATABASE_URL_VAR: &str = "FEDP2EFT_TEST_DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each `async fn NAME(Backend) -> TestResult` listed once per store, as the tests
/// `sqlite::NAME` and `postgres::NAME` (`cargo test sqlite::` runs one half).
#[allow(unused_macros)] // not every test binary has store-parametrised tests
macro_rules! store_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> $crate::common::TestResult {
                    super::$name($crate::common::db::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> $crate::common::TestResult {
                    super::$name($crate::common::db::Backend::Postgres).await
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use store_tests;

/// The PostgreSQL server the tests use, or a failure that says how to get one.
pub fn postgres_url() -> String {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => panic!(
            "{DATABASE_URL_VAR} is not set: the PostgreSQL half of the server tests needs a \
             database. Start one with\n\n    export {DATABASE_URL_VAR}=$(scripts/postgres-test.sh)\n\n\
             (Debian's postgresql package; scripts/test.sh and .ci/run do this), or leave these \
             tests out explicitly with `cargo test -- --skip postgres::`."
        ),
    }
}

/// One test's database. Dropping it removes a PostgreSQL schema with everything in it.
pub struct TestDb {
    pub backend: Backend,
    url: String,
    store: Option<Handle>,
    _dir: Option<tempfile::TempDir>,
    schema: Option<Schema>,
}

enum Handle {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl TestDb {
    /// A fresh database with a store open on it, for servers in this process: in-memory
    /// SQLite, or a new PostgreSQL schema.
    pub async fn new(backend: Backend) -> Self {
        let mut db = match backend {
            Backend::Sqlite => Self::bare(backend, "sqlite::memory:".into(), None, None),
            Backend::Postgres => Self::postgres_schema().await,
        };
        db.store = Some(match backend {
            Backend::Sqlite => Handle::Sqlite(SqliteStore::connect(&db.url).await.expect("sqlite")),
            Backend::Postgres => {
                Handle::Postgres(PgStore::connect(&db.url).await.expect("postgres store"))
            }
        });
        db
    }

    /// A fresh database that server processes can open by URL: a SQLite file in a temporary
    /// folder, or a new PostgreSQL schema. No store is opened here.
    pub async fn for_processes(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}", dir.path().join("fedp2eft.db").display());
                Self::bare(backend, url, Some(dir), None)
            }
            Backend::Postgres => Self::postgres_schema().await,
        }
    }

    fn bare(
        backend: Backend,
        url: String,
        dir: Option<tempfile::TempDir>,
        schema: Option<Schema>,
    ) -> Self {
        Self {
            backend,
            url,
            store: None,
            _dir: dir,
            schema,
        }
    }

    async fn postgres_schema() -> Self {
        let base = postgres_url();
        let schema = Schema::create(&base).await;
        // libpq's `options`: every connection of the store starts in the test's schema.
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{}", schema.name);
        Self::bare(Backend::Postgres, url, None, Some(schema))
    }

    /// The database URL, as a server's `FEDP2EFT_DATABASE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store opened by `new`.
    pub fn store(&self) -> Arc<dyn Store> {
        match &self.store {
            Some(Handle::Sqlite(s)) => Arc::new(s.clone()),
            Some(Handle::Postgres(s)) => Arc::new(s.clone()),
            None => panic!("TestDb::for_processes opens no store"),
        }
    }

    /// Every row of every table, as text, sorted: equal fingerprints, equal databases.
    pub async fn fingerprint(&self) -> Vec<String> {
        let mut out = Vec::new();
        for table in TABLES {
            let mut rows = match &self.store {
                Some(Handle::Sqlite(s)) => sqlite_rows(s, table).await,
                Some(Handle::Postgres(s)) => postgres_rows(s, table).await,
                None => panic!("TestDb::for_processes opens no store"),
            };
            rows.sort();
            out.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
        }
        out
    }
}

const TABLES: [&str; 6] = ["runs", "clients", "psgs", "rounds", "selections", "updates"];

async fn sqlite_rows(store: &SqliteStore, table: &str) -> Vec<String> {
    let columns: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{table}')"
    )))
    .fetch_all(store.pool())
    .await
    .expect("table info")
    .iter()
    .map(|r| r.get::<String, _>("name"))
    .collect();
    let quoted: Vec<String> = columns.iter().map(|c| format!("quote({c})")).collect();
    let sql = format!("SELECT {} AS row FROM {table}", quoted.join(" || ',' || "));
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(store.pool())
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get::<String, _>("row"))
        .collect()
}

async fn postgres_rows(store: &PgStore, table: &str) -> Vec<String> {
    // A row cast to text is its whole record literal, bytea as hex.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT t::TEXT AS row FROM {table} t"
    )))
    .fetch_all(store.pool())
    .await
    .expect("rows")
    .iter()
    .map(|r| r.get::<String, _>("row"))
    .collect()
}

/// A PostgreSQL schema of one test, dropped with everything in it on drop.
struct Schema {
    base_url: String,
    name: String,
}

impl Schema {
    async fn create(base_url: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(base_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_URL_VAR} ({base_url}): {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .expect("create schema");
        let _ = conn.close().await;
        Self {
            base_url: base_url.to_string(),
            name,
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on a future: use a thread
        // with a runtime of its own.
        let (url, name) = (self.base_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}
