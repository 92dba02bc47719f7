//! The `Store` contract, on both stores: the same cases against `dyn Store` on SQLite and on
//! PostgreSQL, plus what matters once several processes share one database — round locks, and
//! uploads racing a close.
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db::{store_tests, Backend, TestDb};
use common::TestResult;
use fedp2eft_server::store::{
    ClientRecord, CloseReason, NewPsg, NewRound, NewUpdate, PgStore, Pool, PutOutcome, RoundClose,
    RoundOutcome, RoundState, RunRecord, RunState, Store, StoreError,
};

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
async fn seeded(db: &TestDb) -> std::result::Result<Arc<dyn Store>, StoreError> {
    let store = db.store();
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
    Ok(store)
}

async fn runs_and_clients_round_trip(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = seeded(&db).await?;
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

async fn a_round_opens_once(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = seeded(&db).await?;
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

async fn uploads_are_checked_and_idempotent(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = seeded(&db).await?;
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

async fn closing_freezes_and_finishing_advances_atomically(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = seeded(&db).await?;
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

async fn a_failed_finish_changes_nothing(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = seeded(&db).await?;
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

/// A run `m` with `n` seen clients m00.., all selected in its open round 0.
async fn many(store: &dyn Store, n: usize) -> std::result::Result<Vec<String>, StoreError> {
    store.create_run(&run("m"), &psg(0, 0)).await?;
    let ids: Vec<String> = (0..n).map(|i| format!("m{i:02}")).collect();
    for id in &ids {
        store.enroll(&client("m", id, Pool::Seen)).await?;
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(store.open_round("m", &new_round(0, &refs)).await?);
    Ok(ids)
}

fn update_of(run: &str, client: &str, digest: &str) -> NewUpdate {
    NewUpdate {
        run_id: run.into(),
        ..update(0, client, digest)
    }
}

async fn round_locks_are_exclusive_until_released(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = seeded(&db).await?;
    // On PostgreSQL a second store on the same database stands for a second server process;
    // SQLite has one process per file, so there the same store is asked twice.
    let other: Arc<dyn Store> = match backend {
        Backend::Postgres => Arc::new(PgStore::connect(db.url()).await?),
        Backend::Sqlite => Arc::clone(&store),
    };
    let held = store.lock_round("r", 0).await?.ok_or("first lock")?;
    assert!(other.lock_round("r", 0).await?.is_none(), "held elsewhere");
    assert!(store.lock_round("r", 0).await?.is_none(), "not re-entrant");
    let next = other.lock_round("r", 1).await?.ok_or("another round")?;
    next.release().await;
    held.release().await;
    let again = other.lock_round("r", 0).await?.ok_or("released")?;
    // A holder that vanishes without releasing (a killed process: its connection closes)
    // frees the round too. PostgreSQL notices the closed socket within moments.
    drop(again);
    let started = Instant::now();
    loop {
        if let Some(lock) = store.lock_round("r", 0).await? {
            lock.release().await;
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a dropped lock stays held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn every_stored_update_is_in_the_closing(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.store();
    let ids = many(store.as_ref(), 40).await?;
    let mut uploads = Vec::new();
    for id in &ids {
        let (store, id) = (Arc::clone(&store), id.clone());
        uploads.push(tokio::spawn(async move {
            let outcome = store.put_update(&update_of("m", &id, &id)).await;
            (id, outcome)
        }));
    }
    // Close while uploads are in flight.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        store
            .begin_closing("m", 0, 50, CloseReason::Deadline)
            .await?
    );
    let mut stored = BTreeSet::new();
    for upload in uploads {
        let (id, outcome) = upload.await?;
        match outcome? {
            PutOutcome::Stored => {
                stored.insert(id);
            }
            PutOutcome::RoundNotOpen => {}
            other => panic!("{id}: {other:?}"),
        }
    }
    let seen: BTreeSet<String> = store
        .updates("m", 0)
        .await?
        .into_iter()
        .map(|u| u.client_id)
        .collect();
    assert_eq!(seen, stored, "the closing sees exactly the stored updates");
    Ok(())
}

async fn racing_openers_and_retries_count_once(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.store();
    store.create_run(&run("o"), &psg(0, 0)).await?;
    for id in ["a", "b", "c"] {
        store.enroll(&client("o", id, Pool::Seen)).await?;
    }
    // Eight first polls open round 0 at once, each with its own idea of the selection.
    let mut openers = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        let pick = ["a", "b", "c"][i % 3];
        openers.push(tokio::spawn(async move {
            let opened = store.open_round("o", &new_round(0, &[pick])).await;
            (pick, opened)
        }));
    }
    let mut winners = Vec::new();
    for opener in openers {
        let (pick, opened) = opener.await?;
        if opened? {
            winners.push(pick);
        }
    }
    assert_eq!(winners.len(), 1, "round 0 opened once");
    let round = store.round("o", 0).await?.ok_or("round missing")?;
    assert_eq!((round.state, round.selected), (RoundState::Open, 1));
    assert!(store.is_selected("o", 0, winners[0]).await?);

    // The same upload sent eight times at once (retries through several processes): stored
    // once, every other copy a duplicate.
    let mut copies = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        let update = update_of("o", winners[0], "same");
        copies.push(tokio::spawn(async move { store.put_update(&update).await }));
    }
    let mut outcomes = Vec::new();
    for copy in copies {
        outcomes.push(copy.await??);
    }
    let stored = outcomes
        .iter()
        .filter(|o| **o == PutOutcome::Stored)
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == PutOutcome::Duplicate)
        .count();
    assert_eq!((stored, duplicates), (1, 7), "{outcomes:?}");
    assert_eq!(store.round("o", 0).await?.ok_or("round")?.reported, 1);
    Ok(())
}

store_tests!(
    runs_and_clients_round_trip,
    a_round_opens_once,
    uploads_are_checked_and_idempotent,
    closing_freezes_and_finishing_advances_atomically,
    a_failed_finish_changes_nothing,
    round_locks_are_exclusive_until_released,
    every_stored_update_is_in_the_closing,
    racing_openers_and_retries_count_once,
);
