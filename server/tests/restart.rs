//! The real `fedp2eft-server` binary, killed with SIGKILL mid-round and restarted on the same
//! database (a SQLite file, or a PostgreSQL schema): every acknowledged update survives and the
//! round completes with all of them. Also: a deadline that passes while no server runs is
//! handled at start, and SIGTERM stops the server cleanly.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::db::{store_tests, Backend, TestDb};
use common::process::Server;
use common::*;
use fedp2eft_wire::{routes, RoundState, RunState, RunStatus, UploadAccepted};

async fn sigkill_mid_round_loses_no_accepted_update(backend: Backend) -> TestResult {
    let db = TestDb::for_processes(backend).await;
    let mut a = Server::start(&db).await?;

    // Run `k`: all 3 clients selected, every one needed. Run `d`: 1-second deadline, quorum 1.
    let k = create_run("k", 1.0, 1, 1.0);
    let d = fedp2eft_wire::CreateRun {
        deadline_s: 1,
        min_completion: 0.3,
        ..create_run("d", 1.0, 1, 1.0)
    };
    for run in [&k, &d] {
        let created = a
            .post(routes::CREATE_RUN, ADMIN, create_body(run, &params(0.0)))
            .await?;
        assert_eq!(created.status(), 201);
    }
    let mut tokens = Vec::new();
    for c in ["a", "b", "c"] {
        tokens.push(a.enroll("k", c).await?);
    }
    let d_token = a.enroll("d", "a").await?;
    for (run, token) in [("k", &tokens[0]), ("d", &d_token)] {
        let task = a
            .http
            .get(a.url(&routes::task(run)))
            .bearer_auth(token)
            .send()
            .await?;
        assert_eq!(task.status(), 200, "opens round 0");
    }
    let parts = [("a", 1.0f32, 3u64), ("b", 2.0, 1), ("c", -4.0, 4)];
    for ((c, base, n), token) in parts.iter().zip(&tokens).take(2) {
        let reply = a
            .post(
                &routes::update("k", 0),
                token,
                update_body("k", 0, c, *n, &params(*base)),
            )
            .await?;
        assert_eq!(reply.status(), 200);
    }
    let reply = a
        .post(
            &routes::update("d", 0),
            &d_token,
            update_body("d", 0, "a", 7, &params(3.0)),
        )
        .await?;
    assert_eq!(reply.status(), 200);
    a.kill9()?;

    // Let run d's deadline pass while no server runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut b = Server::start(&db).await?;
    let d_round = b.round("d", 0).await?;
    assert_eq!(
        d_round.state,
        RoundState::Closed,
        "closed at start, not at the next tick"
    );
    let d_phi = b
        .http
        .get(b.url(&routes::psg("d", 1)))
        .bearer_auth(&d_token)
        .send()
        .await?
        .bytes()
        .await?;
    assert!(decode_psg(&d_phi).0.bit_eq(&hand_fedavg(&[(3.0, 7)])));

    let status = b.round("k", 0).await?;
    assert_eq!(
        (status.state, status.reported, status.selected),
        (RoundState::Open, 2, 3)
    );
    // The first client's retry is recognised: its update was stored before the 200.
    let (c0, base0, n0) = parts[0];
    let retry: UploadAccepted = b
        .post(
            &routes::update("k", 0),
            &tokens[0],
            update_body("k", 0, c0, n0, &params(base0)),
        )
        .await?
        .json()
        .await?;
    assert!(retry.duplicate);
    let (c2, base2, n2) = parts[2];
    let reply = b
        .post(
            &routes::update("k", 0),
            &tokens[2],
            update_body("k", 0, c2, n2, &params(base2)),
        )
        .await?;
    assert_eq!(reply.status(), 200);

    let status = b.finished_round("k", 0).await?;
    assert_eq!((status.state, status.reported), (RoundState::Closed, 3));
    let run: RunStatus = b
        .http
        .get(b.url(&routes::run("k")))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!((run.state, run.round), (RunState::Finished, 1));
    let phi1 = b
        .http
        .get(b.url(&routes::psg("k", 1)))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .bytes()
        .await?;
    let expected = hand_fedavg(&parts.map(|(_, base, n)| (base, n)));
    assert!(
        decode_psg(&phi1).0.bit_eq(&expected),
        "the aggregate includes all three"
    );

    // SIGTERM: graceful shutdown, exit status 0.
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(b.child.id().to_string())
        .status()?;
    assert!(killed.success());
    let started = Instant::now();
    loop {
        if let Some(status) = b.child.try_wait()? {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

store_tests!(sigkill_mid_round_loses_no_accepted_update);
