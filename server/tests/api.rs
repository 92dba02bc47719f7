//! The HTTP API in process (`tower::ServiceExt::oneshot`): a run's rounds, every refused input
//! with its status and an unchanged database, idempotent uploads, deadlines and quorum. Each
//! test runs on SQLite and on PostgreSQL.
mod common;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use common::db::{store_tests, Backend, TestDb};
use common::*;
use fedp2eft_server::{app, close, AppState, Config};
use fedp2eft_wire::{
    routes, Enrolled, ErrorBody, ErrorCode, RoundState, RoundStatus, RunCreated, RunStatus, Task,
    UpdateMeta, UploadAccepted,
};
use serde::de::DeserializeOwned;
use tower::ServiceExt;

struct Api {
    app: Router,
    state: AppState,
    db: TestDb,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error reply: its status and the code in its stable body.
    fn expect_error(&self, code: ErrorCode) {
        let body: ErrorBody = self.json();
        assert_eq!(body.error.code, code, "{}", body.error.message);
        assert_eq!(self.status.as_u16(), code.http_status());
    }
}

impl Api {
    async fn new(backend: Backend) -> Self {
        Self::with_limit(backend, None).await
    }

    async fn with_limit(backend: Backend, max_body_bytes: Option<usize>) -> Self {
        let db = TestDb::new(backend).await;
        let mut config = Config::new(ADMIN, db.url());
        if let Some(limit) = max_body_bytes {
            config.max_body_bytes = limit;
        }
        let state = AppState::new(config, db.store());
        Self {
            app: app(state.clone()),
            state,
            db,
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Vec<u8>,
        json: bool,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let content_type = if json {
            "application/json"
        } else {
            routes::PAYLOAD_CONTENT_TYPE
        };
        request = request.header(header::CONTENT_TYPE, content_type);
        let request = request.body(Body::from(body)).expect("request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, uri, token, Vec::new(), false).await
    }

    async fn upload(&self, run: &str, round: u32, token: &str, body: Vec<u8>) -> Reply {
        self.send(
            Method::POST,
            &routes::update(run, round),
            Some(token),
            body,
            false,
        )
        .await
    }

    async fn create(&self, run: &fedp2eft_wire::CreateRun) -> Reply {
        let body = create_body(run, &params(0.0));
        self.send(Method::POST, routes::CREATE_RUN, Some(ADMIN), body, false)
            .await
    }

    async fn enroll(&self, run: &str, client: &str, pool: &str) -> Reply {
        let body = format!(r#"{{"client":"{client}","pool":"{pool}"}}"#).into_bytes();
        self.send(Method::POST, &routes::enroll(run), Some(ADMIN), body, true)
            .await
    }

    async fn token(&self, run: &str, client: &str, pool: &str) -> String {
        let reply = self.enroll(run, client, pool).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        reply.json::<Enrolled>().token
    }

    async fn task(&self, run: &str, token: &str) -> Task {
        let reply = self.get(&routes::task(run), Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()
    }

    async fn round(&self, run: &str, round: u32) -> RoundStatus {
        let reply = self.get(&routes::round(run, round), Some(ADMIN)).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()
    }

    async fn fingerprint(&self) -> Vec<String> {
        self.db.fingerprint().await
    }
}

/// Run `r` with seen clients s0..s3 (fraction 0.5: two are selected per round) and unseen u0;
/// round 0 opened by the first task poll. Returns (tokens by client, selected, not selected).
async fn two_of_four(api: &Api) -> (Vec<(String, String)>, Vec<String>, Vec<String>) {
    assert_eq!(
        api.create(&create_run("r", 0.5, 2, 1.0)).await.status,
        StatusCode::CREATED
    );
    let mut tokens = Vec::new();
    for c in ["s0", "s1", "s2", "s3"] {
        tokens.push((c.to_string(), api.token("r", c, "seen").await));
    }
    tokens.push(("u0".to_string(), api.token("r", "u0", "unseen").await));
    let (mut selected, mut idle) = (Vec::new(), Vec::new());
    for (client, token) in &tokens {
        match api.task("r", token).await {
            Task::Train(_) => selected.push(client.clone()),
            Task::Wait { .. } => idle.push(client.clone()),
            Task::Finished(_) => panic!("finished at round 0"),
        }
    }
    assert_eq!(selected.len(), 2, "ceil(0.5 × 4)");
    (tokens, selected, idle)
}

fn token_of<'a>(tokens: &'a [(String, String)], client: &str) -> &'a str {
    tokens
        .iter()
        .find(|(c, _)| c == client)
        .map(|(_, t)| t.as_str())
        .expect("enrolled")
}

async fn two_rounds_with_three_clients_average_by_hand(backend: Backend) -> TestResult {
    let api = Api::new(backend).await;
    let created: RunCreated = api.create(&create_run("r", 1.0, 2, 1.0)).await.json();
    assert_eq!(created.run, "r");
    let clients = [("a", 1.0f32, 1u64), ("b", 2.0, 2), ("c", 4.0, 5)];
    let mut tokens = Vec::new();
    for (c, ..) in clients {
        tokens.push(api.token("r", c, "seen").await);
    }
    let unseen = api.token("r", "u", "unseen").await;
    let mut expected_digest = created.psg_sha256;
    for k in 0..2u32 {
        // Each round the clients send different parameters, so round 1 cannot pass by chance.
        let shift = k as f32 * 10.0;
        for ((c, base, n), token) in clients.iter().zip(&tokens) {
            let Task::Train(task) = api.task("r", token).await else {
                panic!("{c} should train round {k}");
            };
            assert_eq!(
                (task.psg.round, task.upload.clone()),
                (k, routes::update("r", k))
            );
            assert_eq!(task.psg.psg_sha256, expected_digest);
            let phi = api.get(&task.psg.psg, Some(token)).await;
            assert_eq!(phi.status, StatusCode::OK);
            assert_eq!(fedp2eft_wire::sha256_hex(&phi.body), expected_digest);
            assert_eq!(decode_psg(&phi.body).1.round, k);
            let body = update_body("r", k, c, *n, &params(base + shift));
            let reply = api.upload("r", k, token, body).await;
            assert_eq!(reply.status, StatusCode::OK);
            let accepted: UploadAccepted = reply.json();
            assert!(!accepted.duplicate);
        }
        if k == 0 {
            assert!(matches!(api.task("r", &unseen).await, Task::Wait { .. }));
        }
        let status = api.round("r", k).await;
        assert_eq!(
            (status.state, status.reported, status.selected),
            (RoundState::Closed, 3, 3)
        );
        let next = api.get(&routes::psg("r", k + 1), Some(ADMIN)).await;
        assert_eq!(next.status, StatusCode::OK);
        let digest = fedp2eft_wire::sha256_hex(&next.body);
        assert_eq!(status.aggregate_sha256.as_deref(), Some(digest.as_str()));
        let (phi, meta) = decode_psg(&next.body);
        assert_eq!(meta.round, k + 1);
        let parts: Vec<(f32, u64)> = clients.iter().map(|(_, b, n)| (b + shift, *n)).collect();
        assert!(
            phi.bit_eq(&hand_fedavg(&parts)),
            "round {k}: FedAvg differs from the hand computation"
        );
        expected_digest = digest;
    }
    let run: RunStatus = api.get(&routes::run("r"), Some(ADMIN)).await.json();
    assert_eq!(
        (run.state, run.round, run.rounds),
        (fedp2eft_wire::RunState::Finished, 2, 2)
    );
    assert_eq!((run.enrolled_seen, run.enrolled_unseen), (3, 1));
    for token in tokens.iter().chain([&unseen]) {
        let Task::Finished(final_psg) = api.task("r", token).await else {
            panic!("run should be finished");
        };
        assert_eq!(
            (final_psg.round, final_psg.psg_sha256.as_str()),
            (2, expected_digest.as_str())
        );
    }
    Ok(())
}

/// FedL2P's learning-rate net is federated through the same routes and FedAvg: a run created
/// with its layout serves it with that layout and averages its tensors by hand.
async fn a_learning_rate_net_run_averages_like_a_psg_run(backend: Backend) -> TestResult {
    let api = Api::new(backend).await;
    let layout = lr_net_layout();
    let spec = layout.spec()?;
    let run = fedp2eft_wire::CreateRun {
        layout: layout.clone(),
        ..create_run("l", 1.0, 1, 1.0)
    };
    let body = params_for(&spec, 0.0).encode(&run)?;
    let reply = api
        .send(Method::POST, routes::CREATE_RUN, Some(ADMIN), body, false)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let clients = [("a", 1.0f32, 3u64), ("b", 5.0, 1)];
    let mut tokens = Vec::new();
    for (c, ..) in clients {
        tokens.push(api.token("l", c, "seen").await);
    }
    for ((c, base, n), token) in clients.iter().zip(&tokens) {
        let Task::Train(task) = api.task("l", token).await else {
            panic!("{c} should train");
        };
        let phi = api.get(&task.psg.psg, Some(token)).await;
        assert_eq!(decode_for(&spec, &phi.body).1.layout, layout);
        let body = params_for(&spec, *base).encode(&UpdateMeta::new("l", 0, *c, *n))?;
        assert_eq!(api.upload("l", 0, token, body).await.status, StatusCode::OK);
    }
    let next = api.get(&routes::psg("l", 1), Some(ADMIN)).await;
    let (phi, meta) = decode_for(&spec, &next.body);
    assert_eq!(
        (meta.round, meta.layout.kind),
        (1, fedp2eft_wire::NetKind::LrNet)
    );
    assert!(phi.bit_eq(&hand_fedavg_for(&spec, &[(1.0, 3), (5.0, 1)])));
    // A PSG-shaped update is refused in this run.
    let psg_shaped = params(1.0).encode(&UpdateMeta::new("l", 1, "a", 1))?;
    assert_ne!(
        api.upload("l", 1, &tokens[0], psg_shaped).await.status,
        StatusCode::OK
    );
    Ok(())
}

async fn refused_requests_answer_their_status_and_change_nothing(backend: Backend) -> TestResult {
    let api = Api::new(backend).await;
    let (tokens, selected, idle) = two_of_four(&api).await;
    let (s, other) = (&selected[0], &idle[0]);
    let token = token_of(&tokens, s);
    let good = || update_body("r", 0, s, 10, &params(1.0));
    let before = api.fingerprint().await;

    // Auth: none, wrong secret, another client's id with this secret, admin as a client.
    let forged = format!("{s}.{}", "0".repeat(64));
    let stolen = token.replacen(s.as_str(), other, 1);
    for bad in [
        None,
        Some("garbage"),
        Some(forged.as_str()),
        Some(stolen.as_str()),
        Some(ADMIN),
    ] {
        let reply = api
            .send(Method::POST, &routes::update("r", 0), bad, good(), false)
            .await;
        reply.expect_error(ErrorCode::Unauthorized);
        assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
    }
    api.get(&routes::task("r"), None)
        .await
        .expect_error(ErrorCode::Unauthorized);
    api.get(&routes::psg("r", 0), Some("x.y"))
        .await
        .expect_error(ErrorCode::Unauthorized);
    api.get(&routes::run("r"), None)
        .await
        .expect_error(ErrorCode::Unauthorized);
    api.get(&routes::round("r", 0), Some(&forged))
        .await
        .expect_error(ErrorCode::Unauthorized);
    let create = create_body(&create_run("r2", 1.0, 1, 1.0), &params(0.0));
    for bad in [None, Some(token)] {
        api.send(Method::POST, routes::CREATE_RUN, bad, create.clone(), false)
            .await
            .expect_error(ErrorCode::Unauthorized);
        api.send(
            Method::POST,
            &routes::enroll("r"),
            bad,
            br#"{"client":"z","pool":"seen"}"#.to_vec(),
            true,
        )
        .await
        .expect_error(ErrorCode::Unauthorized);
    }

    // Unknown things: 404.
    api.upload("nope", 0, token, good())
        .await
        .expect_error(ErrorCode::NotFound);
    api.get(&routes::task("nope"), Some(token))
        .await
        .expect_error(ErrorCode::NotFound);
    api.get(&routes::run("nope"), None)
        .await
        .expect_error(ErrorCode::NotFound);
    api.get(&routes::round("r", 1), Some(token))
        .await
        .expect_error(ErrorCode::NotFound);
    api.get(&routes::psg("r", 1), Some(token))
        .await
        .expect_error(ErrorCode::NotFound);
    api.get("/v1/nothing", None)
        .await
        .expect_error(ErrorCode::NotFound);
    api.send(
        Method::POST,
        &routes::enroll("nope"),
        Some(ADMIN),
        br#"{"client":"z","pool":"seen"}"#.to_vec(),
        true,
    )
    .await
    .expect_error(ErrorCode::NotFound);

    // Not selected, wrong round: 409.
    let other_token = token_of(&tokens, other);
    api.upload(
        "r",
        0,
        other_token,
        update_body("r", 0, other, 10, &params(1.0)),
    )
    .await
    .expect_error(ErrorCode::NotSelected);
    api.upload("r", 1, token, update_body("r", 1, s, 10, &params(1.0)))
        .await
        .expect_error(ErrorCode::WrongRound);

    // Invalid payloads: 422.
    let mut nan = params(1.0);
    if let Some(t) = nan.get_mut("fc2.weight") {
        t.data_mut()[3] = f32::NAN;
    }
    let mut inf = params(1.0);
    if let Some(t) = inf.get_mut("fc1.bias") {
        t.data_mut()[0] = f32::INFINITY;
    }
    let mut wrong_shape = fedp2eft_wire::PsgParams::default();
    for (name, t) in params(1.0).iter() {
        let shape = if name == "fc2.bias" {
            vec![t.data().len() - 1]
        } else {
            t.shape().to_vec()
        };
        let data = t.data()[..shape.iter().product::<usize>()].to_vec();
        wrong_shape.insert(name, fedp2eft_wire::TensorData::new(shape, data)?)?;
    }
    let invalid = [
        update_body("r", 0, s, 10, &nan),
        update_body("r", 0, s, 10, &inf),
        update_body("r", 0, s, 10, &wrong_shape),
        wrong_dtype_body("r", 0, s),
        update_body("r", 1, s, 10, &params(1.0)), // metadata names another round than the URL
        update_body("r", 0, other, 10, &params(1.0)), // ... another client than the token
        update_body("r", 0, s, 0, &params(1.0)),  // no samples
        [&10u64.to_le_bytes()[..], b"{not json!"].concat(), // not safetensors
        Vec::new(),
    ];
    for body in invalid {
        api.upload("r", 0, token, body)
            .await
            .expect_error(ErrorCode::InvalidUpdate);
    }

    // Too large for the run's PSG (wire's per-spec limit): 413.
    let mut padded = good();
    padded.resize(padded.len() + (1 << 17), b' ');
    api.upload("r", 0, token, padded)
        .await
        .expect_error(ErrorCode::TooLarge);

    // Bad control messages: 400; taken names: 409.
    for body in [
        &b"{"[..],
        br#"{"client":"z"}"#,
        br#"{"client":"a/b","pool":"seen"}"#,
        br#"{"client":"z","pool":"seen","x":1}"#,
    ] {
        api.send(
            Method::POST,
            &routes::enroll("r"),
            Some(ADMIN),
            body.to_vec(),
            true,
        )
        .await
        .expect_error(ErrorCode::BadRequest);
    }
    api.enroll("r", s, "seen")
        .await
        .expect_error(ErrorCode::AlreadyExists);
    let bad_config = create_body(&create_run("r3", 0.0, 1, 1.0), &params(0.0));
    api.send(
        Method::POST,
        routes::CREATE_RUN,
        Some(ADMIN),
        bad_config,
        false,
    )
    .await
    .expect_error(ErrorCode::BadRequest);
    api.create(&create_run("r", 1.0, 1, 1.0))
        .await
        .expect_error(ErrorCode::AlreadyExists);
    api.get("/v1/runs/r/rounds/notanumber", Some(ADMIN))
        .await
        .expect_error(ErrorCode::BadRequest);

    assert_eq!(
        api.fingerprint().await,
        before,
        "a refused request changed the database"
    );

    // The same client's good update is still accepted afterwards.
    assert_eq!(
        api.upload("r", 0, token, good()).await.status,
        StatusCode::OK
    );
    let metrics = String::from_utf8(api.get("/metrics", None).await.body.to_vec())?;
    assert!(
        metrics.contains("fedp2eft_uploads_accepted_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fedp2eft_uploads_rejected_total{code=\"invalid_update\"} 9\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fedp2eft_uploads_rejected_total{code=\"unauthorized\"} 5\n"),
        "{metrics}"
    );
    Ok(())
}

async fn body_over_the_server_limit_is_413(backend: Backend) -> TestResult {
    let api = Api::with_limit(backend, Some(1024)).await;
    let reply = api
        .send(
            Method::POST,
            routes::CREATE_RUN,
            Some(ADMIN),
            vec![0u8; 4096],
            false,
        )
        .await;
    reply.expect_error(ErrorCode::TooLarge);
    assert!(api.fingerprint().await.is_empty());
    Ok(())
}

async fn repeated_uploads_count_once(backend: Backend) -> TestResult {
    let api = Api::new(backend).await;
    let (tokens, selected, _) = two_of_four(&api).await;
    let s = &selected[0];
    let token = token_of(&tokens, s);
    let body = update_body("r", 0, s, 10, &params(1.0));
    let first: UploadAccepted = api.upload("r", 0, token, body.clone()).await.json();
    assert!(!first.duplicate);
    let after_first = api.fingerprint().await;
    let again = api.upload("r", 0, token, body.clone()).await;
    assert_eq!(again.status, StatusCode::OK);
    let again: UploadAccepted = again.json();
    assert!(again.duplicate);
    assert_eq!(again.sha256, first.sha256);
    assert_eq!(api.round("r", 0).await.reported, 1);
    // A different second update is refused.
    api.upload("r", 0, token, update_body("r", 0, s, 11, &params(1.0)))
        .await
        .expect_error(ErrorCode::AlreadyReported);
    assert_eq!(api.fingerprint().await, after_first);
    // Having reported, the client waits.
    assert!(matches!(api.task("r", token).await, Task::Wait { .. }));

    // Once the round closed, the identical retry is still acknowledged as a duplicate, and a
    // client that never reported is told the round is closed.
    let s2 = &selected[1];
    let token2 = token_of(&tokens, s2);
    api.upload("r", 0, token2, update_body("r", 0, s2, 30, &params(5.0)))
        .await;
    assert_eq!(api.round("r", 0).await.state, RoundState::Closed);
    let late: UploadAccepted = api.upload("r", 0, token, body).await.json();
    assert!(late.duplicate);
    // Round 1's selection may differ; anyone not holding an update in round 0 is refused.
    let idle = tokens
        .iter()
        .find(|(c, _)| c != s && c != s2 && c != "u0")
        .expect("idle client");
    api.upload(
        "r",
        0,
        &idle.1,
        update_body("r", 0, &idle.0, 1, &params(1.0)),
    )
    .await
    .expect_error(ErrorCode::RoundClosed);
    let phi1 = decode_psg(&api.get(&routes::psg("r", 1), Some(token)).await.body).0;
    assert!(
        phi1.bit_eq(&hand_fedavg(&[(1.0, 10), (5.0, 30)])),
        "counted once"
    );
    Ok(())
}

async fn deadline_aggregates_a_quorum_and_fails_below_it(backend: Backend) -> TestResult {
    let api = Api::new(backend).await;
    assert_eq!(
        api.create(&create_run("q", 1.0, 3, 0.5)).await.status,
        StatusCode::CREATED
    );
    let mut tokens = Vec::new();
    for c in ["a", "b", "c", "d"] {
        tokens.push((c, api.token("q", c, "seen").await));
    }
    assert!(matches!(api.task("q", &tokens[0].1).await, Task::Train(_)));
    // Round 0: 2 of 4 by the deadline = quorum (ceil(0.5 × 4)) -> aggregated.
    for (i, (c, token)) in tokens.iter().take(2).enumerate() {
        let body = update_body("q", 0, c, 1, &params(i as f32));
        assert_eq!(api.upload("q", 0, token, body).await.status, StatusCode::OK);
    }
    let now = fedp2eft_server::state::now_ms();
    close::sweep(&api.state, now + 1_000).await;
    assert_eq!(
        api.round("q", 0).await.state,
        RoundState::Open,
        "deadline not reached"
    );
    let late = now + 601_000;
    close::sweep(&api.state, late).await;
    let status = api.round("q", 0).await;
    assert_eq!(
        (status.state, status.reported, status.quorum),
        (RoundState::Closed, 2, 2)
    );
    let phi1 = decode_psg(&api.get(&routes::psg("q", 1), Some(ADMIN)).await.body).0;
    assert!(phi1.bit_eq(&hand_fedavg(&[(0.0, 1), (1.0, 1)])));

    // Round 1 opened at the close; 1 of 4 by its deadline -> failed, phi carries over.
    let body = update_body("q", 1, "a", 1, &params(9.0));
    assert_eq!(
        api.upload("q", 1, &tokens[0].1, body).await.status,
        StatusCode::OK
    );
    close::sweep(&api.state, late + 601_000).await;
    assert_eq!(api.round("q", 1).await.state, RoundState::Failed);
    let phi2 = decode_psg(&api.get(&routes::psg("q", 2), Some(ADMIN)).await.body);
    assert!(phi2.0.bit_eq(&phi1), "a failed round keeps phi");
    assert_eq!(phi2.1.round, 2);
    let run: RunStatus = api.get(&routes::run("q"), Some(ADMIN)).await.json();
    assert_eq!(run.round, 2);
    let metrics = String::from_utf8(api.get("/metrics", None).await.body.to_vec())?;
    assert!(metrics.contains("fedp2eft_rounds_completed_total{outcome=\"failed\"} 1\n"));
    assert!(
        metrics.contains("fedp2eft_run_current_round{run=\"q\"} 2\n"),
        "{metrics}"
    );
    Ok(())
}

async fn every_documented_route_is_served(backend: Backend) -> TestResult {
    let api = Api::new(backend).await;
    assert_eq!(api.get("/healthz", None).await.status, StatusCode::OK);
    let doc: serde_json::Value = api.get("/openapi.json", None).await.json();
    for (method, path) in fedp2eft_server::openapi::ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        let uri = path.replace("{run}", "x").replace("{round}", "0");
        let method = Method::from_bytes(method.to_uppercase().as_bytes())?;
        let reply = api.send(method, &uri, None, Vec::new(), false).await;
        let routed = !(reply.status == StatusCode::NOT_FOUND
            && reply.json::<ErrorBody>().error.message == "no such route");
        assert!(
            routed && reply.status != StatusCode::METHOD_NOT_ALLOWED,
            "{uri}: {}",
            reply.status
        );
    }
    Ok(())
}

store_tests!(
    two_rounds_with_three_clients_average_by_hand,
    a_learning_rate_net_run_averages_like_a_psg_run,
    refused_requests_answer_their_status_and_change_nothing,
    body_over_the_server_limit_is_413,
    repeated_uploads_count_once,
    deadline_aggregates_a_quorum_and_fails_below_it,
    every_documented_route_is_served,
);
