//! The `Store` contract, exercised on SQLite. Written against `dyn Store` so a PostgreSQL store
//! can run the same cases.
use super::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn run(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        config: "{}".into(),
        seed: u64::MAX - 1, // exercises the i64 round trip
        state: RunState::Running,
        current_round: 0,
        created_at: 1,
    }
}

fn psg(version: u32, byte: u8) -> NewPsg {
    NewPsg {
        version,
        digest: format!("d{version}-{byte}"),
        bytes: vec![byte; 4],
        created_at: 2,
    }
}

fn client(run: &str, id: &str, pool: Pool) -> ClientRecord {
    ClientRecord {
        run_id: run.into(),
        id: id.into(),
        pool,
        token_hash: [7; 32],
        enrolled_at: 3,
    }
}

fn update(round: u32, client: &str, digest: &str) -> NewUpdate {
    NewUpdate {
        run_id: "r".into(),
        round,
        client_id: client.into(),
        num_samples: 10,
        digest: digest.into(),
        bytes: digest.as_bytes().to_vec(),
        received_at: 5,
    }
}

fn new_round(round: u32, selected: &[&str]) -> NewRound {
    NewRound {
        round,
        opened_at: 10,
        deadline_at: 1_000,
        selected: selected.iter().map(|s| s.to_string()).collect(),
    }
}

/// A run `r` with seen clients a, b, c and unseen u, round 0 open with a and b selected.
async fn seeded() -> std::result::Result<Box<dyn Store>, StoreError> {
    let store = SqliteStore::connect("sqlite::memory:").await?;
    store.create_run(&run("r"), &psg(0, 0)).await?;
    for (id, pool) in [
        ("a", Pool::Seen),
        ("b", Pool::Seen),
        ("c", Pool::Seen),
        ("u", Pool::Unseen),
    ] {
        store.enroll(&client("r", id, pool)).await?;
    }
    assert!(store.open_round("r", &new_round(0, &["a", "b"])).await?);
    Ok(Box::new(store))
}

#[tokio::test]
async fn runs_and_clients_round_trip() -> TestResult {
    let store = seeded().await?;
    let stored = store.run("r").await?.ok_or("run missing")?;
    assert_eq!(stored, run("r"));
    assert!(matches!(
        store.create_run(&run("r"), &psg(0, 0)).await,
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.enroll(&client("r", "a", Pool::Unseen)).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(
        store.client("r", "u").await?,
        Some(client("r", "u", Pool::Unseen))
    );
    assert_eq!(store.client("r", "zz").await?, None);
    assert_eq!(store.seen_clients("r").await?, ["a", "b", "c"]);
    assert_eq!(store.pool_sizes("r").await?, (3, 1));
    assert_eq!(store.pool_sizes("none").await?, (0, 0));
    assert_eq!(store.psg_digest("r", 0).await?.as_deref(), Some("d0-0"));
    assert_eq!(store.psg("r", 0).await?.map(|p| p.bytes), Some(vec![0; 4]));
    assert_eq!(store.runs_in_state(RunState::Running).await?.len(), 1);
    store.ping().await?;
    Ok(())
}

#[tokio::test]
async fn a_round_opens_once() -> TestResult {
    let store = seeded().await?;
    assert!(
        !store.open_round("r", &new_round(0, &["c"])).await?,
        "already open"
    );
    assert!(
        !store.open_round("r", &new_round(1, &["c"])).await?,
        "not the current round"
    );
    let round = store.round("r", 0).await?.ok_or("round missing")?;
    assert_eq!(
        (round.state, round.selected, round.reported),
        (RoundState::Open, 2, 0)
    );
    assert!(store.is_selected("r", 0, "a").await?);
    assert!(!store.is_selected("r", 0, "c").await?);
    Ok(())
}

#[tokio::test]
async fn uploads_are_checked_and_idempotent() -> TestResult {
    let store = seeded().await?;
    assert_eq!(
        store.put_update(&update(0, "a", "x")).await?,
        PutOutcome::Stored
    );
    assert_eq!(
        store.put_update(&update(0, "a", "x")).await?,
        PutOutcome::Duplicate
    );
    assert_eq!(
        store.put_update(&update(0, "a", "y")).await?,
        PutOutcome::Conflict
    );
    assert_eq!(
        store.put_update(&update(0, "c", "z")).await?,
        PutOutcome::NotSelected
    );
    assert_eq!(
        store.put_update(&update(3, "a", "x")).await?,
        PutOutcome::NoSuchRound
    );
    let round = store.round("r", 0).await?.ok_or("round missing")?;
    assert_eq!((round.reported, round.total_samples), (1, 10));
    assert_eq!(
        store.update_digest("r", 0, "a").await?.as_deref(),
        Some("x")
    );
    assert_eq!(store.update_bytes("r", 0, "a").await?, Some(b"x".to_vec()));
    Ok(())
}

#[tokio::test]
async fn closing_freezes_and_finishing_advances_atomically() -> TestResult {
    let store = seeded().await?;
    store.put_update(&update(0, "b", "x")).await?;
    assert!(
        store
            .begin_closing("r", 0, 50, CloseReason::Deadline)
            .await?
    );
    assert!(
        !store
            .begin_closing("r", 0, 51, CloseReason::Deadline)
            .await?,
        "only once"
    );
    assert_eq!(
        store.put_update(&update(0, "a", "y")).await?,
        PutOutcome::RoundNotOpen
    );
    // A retry of an update that made it in is still recognised after the close.
    assert_eq!(
        store.put_update(&update(0, "b", "x")).await?,
        PutOutcome::Duplicate
    );
    let updates = store.updates("r", 0).await?;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].client_id, "b");
    let unfinished = store.unfinished_rounds().await?;
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].close_reason, Some(CloseReason::Deadline));

    let close = RoundClose {
        run_id: "r".into(),
        round: 0,
        outcome: RoundOutcome::Aggregated,
        closed_at: 60,
        next_psg: psg(1, 1),
        next_round: Some(new_round(1, &["c"])),
    };
    assert!(store.finish_round(&close).await?);
    assert!(!store.finish_round(&close).await?, "only once");
    let run = store.run("r").await?.ok_or("run missing")?;
    assert_eq!((run.state, run.current_round), (RunState::Running, 1));
    let closed = store.round("r", 0).await?.ok_or("round missing")?;
    assert_eq!(
        (closed.state, closed.closed_at),
        (RoundState::Aggregated, Some(60))
    );
    assert_eq!(store.psg_digest("r", 1).await?.as_deref(), Some("d1-1"));
    assert!(store.is_selected("r", 1, "c").await?);

    // The last round finishes the run.
    assert!(
        store
            .begin_closing("r", 1, 70, CloseReason::Deadline)
            .await?
    );
    let last = RoundClose {
        round: 1,
        outcome: RoundOutcome::Failed,
        next_psg: psg(2, 1),
        next_round: None,
        ..close
    };
    assert!(store.finish_round(&last).await?);
    let run = store.run("r").await?.ok_or("run missing")?;
    assert_eq!((run.state, run.current_round), (RunState::Finished, 2));
    assert!(store.unfinished_rounds().await?.is_empty());
    assert!(
        !store.open_round("r", &new_round(2, &["a"])).await?,
        "finished runs open nothing"
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_finish_changes_nothing() -> TestResult {
    let store = seeded().await?;
    assert!(
        store
            .begin_closing("r", 0, 50, CloseReason::Deadline)
            .await?
    );
    // phi_0 exists already: storing it again violates the key, so the transaction must roll
    // back the round's state change too.
    let bad = RoundClose {
        run_id: "r".into(),
        round: 0,
        outcome: RoundOutcome::Failed,
        closed_at: 60,
        next_psg: psg(0, 9),
        next_round: None,
    };
    assert!(store.finish_round(&bad).await.is_err());
    let round = store.round("r", 0).await?.ok_or("round missing")?;
    assert_eq!(round.state, RoundState::Closing);
    let run = store.run("r").await?.ok_or("run missing")?;
    assert_eq!((run.state, run.current_round), (RunState::Running, 0));
    Ok(())
}

#[tokio::test]
async fn a_file_database_survives_reopening() -> TestResult {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("f.db").display());
    {
        let store = SqliteStore::connect(&url).await?;
        store.create_run(&run("r"), &psg(0, 0)).await?;
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
