//! Scale-out on PostgreSQL: two real `fedp2eft-server` processes on one database, as behind a
//! load balancer. Many clients enrol, poll, download and upload through both at once (each
//! request of a client may land on either process); every round must aggregate exactly once —
//! by one process — with every accepted update in it, equal to FedAvg computed by hand. A
//! second run closes at its deadline, which both processes' deadline checks race for.
mod common;

mod postgres {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::common::db::{Backend, TestDb};
    use crate::common::process::Server;
    use crate::common::*;
    use fedp2eft_wire::{routes, sha256_hex, CreateRun, RoundState, Task, UploadAccepted};
    use tokio::sync::Barrier;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    const CLIENTS: usize = 24;
    const ROUNDS: u32 = 2;

    /// Client i's update in round k: parameters `base + …` (exact in f32, so FedAvg by hand is
    /// exact too) with i + 1 samples.
    fn part(i: usize, k: u32) -> (f32, u64) {
        (i as f32 * 0.25 - 3.0 + k as f32 * 10.0, i as u64 + 1)
    }

    /// One client: in each round, poll and download through one process, wait until every
    /// client is ready (so the uploads arrive together), upload through the other.
    async fn client(
        servers: Arc<[Server; 2]>,
        barrier: Arc<Barrier>,
        i: usize,
        token: String,
    ) -> Result<(), Error> {
        let id = format!("c{i:02}");
        for k in 0..ROUNDS {
            let poll = &servers[(i + k as usize) % 2];
            let upload = &servers[(i + k as usize + 1) % 2];
            let started = Instant::now();
            let task = loop {
                let task: Task = poll
                    .http
                    .get(poll.url(&routes::task("s")))
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                match task {
                    Task::Train(t) if t.psg.round == k => break t,
                    Task::Finished(_) => return Err(format!("{id}: finished before {k}").into()),
                    _ if started.elapsed() > Duration::from_secs(60) => {
                        return Err(format!("{id}: round {k} never came").into())
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let phi = upload.get_bytes(&task.psg.psg, &token).await?;
            if sha256_hex(&phi) != task.psg.psg_sha256 {
                return Err(format!("{id}: phi_{k} differs between the processes").into());
            }
            barrier.wait().await;
            let (base, n) = part(i, k);
            let reply = upload
                .post(
                    &task.upload,
                    &token,
                    update_body("s", k, &id, n, &params(base)),
                )
                .await?;
            if reply.status() != 200 {
                return Err(format!("{id}: upload {k}: {}", reply.status()).into());
            }
            let accepted: UploadAccepted = reply.json().await?;
            if accepted.duplicate {
                return Err(format!("{id}: first upload of {k} called a duplicate").into());
            }
        }
        Ok(())
    }

    async fn sum(servers: &[Server; 2], sample: &str) -> Result<u64, Error> {
        Ok(servers[0].metric(sample).await? + servers[1].metric(sample).await?)
    }

    async fn create(server: &Server, run: &CreateRun) -> Result<(), Error> {
        let reply = server
            .post(routes::CREATE_RUN, ADMIN, create_body(run, &params(0.0)))
            .await?;
        assert_eq!(reply.status(), 201);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_aggregate_each_round_exactly_once() -> TestResult {
        let db = TestDb::for_processes(Backend::Postgres).await;
        // Started together: both migrate the empty schema at once.
        let (a, b) = tokio::join!(Server::start(&db), Server::start(&db));
        let servers = Arc::new([a?, b?]);

        // Run `s`: every client selected, every one needed, through both processes.
        create(&servers[0], &create_run("s", 1.0, ROUNDS, 1.0)).await?;
        let mut tokens = Vec::new();
        for i in 0..CLIENTS {
            tokens.push(servers[i % 2].enroll("s", &format!("c{i:02}")).await?);
        }
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let tasks: Vec<_> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                let (servers, barrier) = (Arc::clone(&servers), Arc::clone(&barrier));
                tokio::spawn(client(servers, barrier, i, token))
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        for k in 0..ROUNDS {
            for server in servers.iter() {
                let status = server.finished_round("s", k).await?;
                assert_eq!(
                    (status.state, status.reported, status.selected),
                    (RoundState::Closed, CLIENTS as u64, CLIENTS as u64),
                    "round {k}"
                );
            }
            let parts: Vec<(f32, u64)> = (0..CLIENTS).map(|i| part(i, k)).collect();
            let phi = servers[1]
                .get_bytes(&routes::psg("s", k + 1), ADMIN)
                .await?;
            assert_eq!(
                phi,
                servers[0]
                    .get_bytes(&routes::psg("s", k + 1), ADMIN)
                    .await?
            );
            assert!(
                decode_psg(&phi).0.bit_eq(&hand_fedavg(&parts)),
                "round {k}: the aggregate is FedAvg of all {CLIENTS} updates"
            );
        }

        // Run `d`: 3 of 6 report (the quorum), then its 1-second deadline passes; both
        // processes check deadlines every 100 ms and race to close it.
        let d = CreateRun {
            deadline_s: 1,
            ..create_run("d", 1.0, 1, 0.5)
        };
        create(&servers[1], &d).await?;
        let mut d_tokens = Vec::new();
        for i in 0..6 {
            d_tokens.push(servers[i % 2].enroll("d", &format!("d{i}")).await?);
        }
        let first: Task = servers[0]
            .http
            .get(servers[0].url(&routes::task("d")))
            .bearer_auth(&d_tokens[0])
            .send()
            .await?
            .json()
            .await?;
        assert!(matches!(first, Task::Train(_)), "opens round 0 of d");
        for (i, token) in d_tokens.iter().enumerate().take(3) {
            let body = update_body("d", 0, &format!("d{i}"), 2, &params(i as f32));
            let reply = servers[i % 2]
                .post(&routes::update("d", 0), token, body)
                .await?;
            assert_eq!(reply.status(), 200);
        }
        let status = servers[0].finished_round("d", 0).await?;
        assert_eq!((status.state, status.reported), (RoundState::Closed, 3));
        let phi = servers[0].get_bytes(&routes::psg("d", 1), ADMIN).await?;
        assert!(decode_psg(&phi)
            .0
            .bit_eq(&hand_fedavg(&[(0.0, 2), (1.0, 2), (2.0, 2)])));

        // Exactly one close per round, over both processes: ROUNDS of `s`, one of `d`.
        let rounds = u64::from(ROUNDS) + 1;
        assert_eq!(
            sum(&servers, "fedp2eft_round_closes_started_total").await?,
            rounds,
            "a round was aggregated by more than one process"
        );
        assert_eq!(
            sum(
                &servers,
                "fedp2eft_rounds_completed_total{outcome=\"aggregated\"}"
            )
            .await?,
            rounds
        );
        assert_eq!(
            sum(&servers, "fedp2eft_uploads_accepted_total").await?,
            (CLIENTS as u64) * u64::from(ROUNDS) + 3
        );
        assert_eq!(sum(&servers, "fedp2eft_uploads_duplicate_total").await?, 0);
        Ok(())
    }
}
