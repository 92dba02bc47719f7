//! What only the SQLite store has: a file that survives reopening, in WAL mode. The `Store`
//! contract itself is tested on both stores in `server/tests/store.rs`.
use super::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn run(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        config: "{}".into(),
        seed: 1,
        state: RunState::Running,
        current_round: 0,
        created_at: 1,
    }
}

fn psg() -> NewPsg {
    NewPsg {
        version: 0,
        digest: "d".into(),
        bytes: vec![0; 4],
        created_at: 2,
    }
}

#[tokio::test]
async fn a_file_database_survives_reopening() -> TestResult {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("f.db").display());
    {
        let store = SqliteStore::connect(&url).await?;
        store.create_run(&run("r"), &psg()).await?;
        store.pool().close().await;
    }
    let store = SqliteStore::connect(&url).await?;
    assert!(store.run("r").await?.is_some());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await?;
    assert_eq!(mode, "wal");
    Ok(())
}
