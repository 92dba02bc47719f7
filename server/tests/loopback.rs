//! End to end over loopback HTTP: `serve_on` with its deadline task, three clients as
//! concurrent tasks doing what a real client does (poll, download, verify, upload) for two
//! rounds, then a graceful shutdown. On SQLite and on PostgreSQL.
mod common;

use std::time::Duration;

use common::db::{store_tests, Backend, TestDb};
use common::*;
use fedp2eft_server::{serve_on, AppState, Config};
use fedp2eft_wire::{routes, sha256_hex, Enrolled, Task};
use tokio::net::TcpListener;

/// One client's loop until the run finishes; returns the final PSG's bytes.
async fn client(
    http: reqwest::Client,
    base: String,
    token: String,
    id: &'static str,
    base_value: f32,
    n: u64,
) -> Result<Vec<u8>, String> {
    let err = |e: reqwest::Error| e.to_string();
    for _ in 0..2000 {
        let task: Task = http
            .get(format!("{base}{}", routes::task("e2e")))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(err)?
            .json()
            .await
            .map_err(err)?;
        match task {
            Task::Wait { .. } => tokio::time::sleep(Duration::from_millis(10)).await,
            Task::Train(t) => {
                let phi = http
                    .get(format!("{base}{}", t.psg.psg))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map_err(err)?
                    .bytes()
                    .await
                    .map_err(err)?;
                if sha256_hex(&phi) != t.psg.psg_sha256 {
                    return Err("PSG digest mismatch".into());
                }
                let k = t.psg.round;
                let body = update_body("e2e", k, id, n, &params(base_value + k as f32));
                let reply = http
                    .post(format!("{base}{}", t.upload))
                    .bearer_auth(&token)
                    .header("content-type", routes::PAYLOAD_CONTENT_TYPE)
                    .body(body)
                    .send()
                    .await
                    .map_err(err)?;
                if reply.status() != 200 {
                    return Err(format!("upload: {}", reply.status()));
                }
            }
            Task::Finished(f) => {
                let phi = http
                    .get(format!("{base}{}", f.psg))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map_err(err)?
                    .bytes()
                    .await
                    .map_err(err)?;
                return Ok(phi.to_vec());
            }
        }
    }
    Err("the run did not finish".into())
}

async fn three_concurrent_clients_two_rounds_over_http(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let mut config = Config::new(ADMIN, db.url());
    config.deadline_check = Duration::from_millis(50);
    let state = AppState::new(config, db.store());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, state, async {
        let _ = stop_rx.await;
    }));

    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}{}", routes::CREATE_RUN))
        .bearer_auth(ADMIN)
        .header("content-type", routes::PAYLOAD_CONTENT_TYPE)
        .body(create_body(&create_run("e2e", 1.0, 2, 1.0), &params(0.0)))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let clients = [("a", 1.0f32, 2u64), ("b", 3.0, 1), ("c", 0.5, 4)];
    let mut handles = Vec::new();
    for (id, value, n) in clients {
        let enrolled: Enrolled = http
            .post(format!("{base}{}", routes::enroll("e2e")))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "client": id, "pool": "seen" }))
            .send()
            .await?
            .json()
            .await?;
        handles.push((http.clone(), base.clone(), enrolled.token, id, value, n));
    }
    // Start them only once all are enrolled: round 0 samples who is enrolled at the first poll.
    let handles: Vec<_> = handles
        .into_iter()
        .map(|(h, b, t, id, v, n)| tokio::spawn(client(h, b, t, id, v, n)))
        .collect();
    let mut finals = Vec::new();
    for handle in handles {
        finals.push(handle.await??);
    }
    assert!(
        finals.windows(2).all(|w| w[0] == w[1]),
        "every client got the same final PSG"
    );
    // Round 1's inputs are each client's value + 1.
    let expected = hand_fedavg(&clients.map(|(_, v, n)| (v + 1.0, n)));
    let (phi2, meta) = decode_psg(&finals[0]);
    assert_eq!(meta.round, 2);
    assert!(phi2.bit_eq(&expected));

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("fedp2eft_uploads_accepted_total 6\n"),
        "{metrics}"
    );
    assert!(metrics.contains("fedp2eft_rounds_completed_total{outcome=\"aggregated\"} 2\n"));

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}

store_tests!(three_concurrent_clients_two_rounds_over_http);
