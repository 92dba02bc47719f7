//! The real `fedp2eft-server` binary as a child process on a free loopback port, with a few
//! HTTP helpers. Killed when dropped, so a failing test leaves no server behind.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedp2eft_wire::{routes, Enrolled, RoundState, RoundStatus};

use super::db::TestDb;
use super::ADMIN;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    pub async fn start(db: &TestDb) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let port = free_port()?;
        let child = Command::new(env!("CARGO_BIN_EXE_fedp2eft-server"))
            .env("FEDP2EFT_ADMIN_TOKEN", ADMIN)
            .env("FEDP2EFT_DATABASE_URL", db.url())
            .env("FEDP2EFT_BIND", format!("127.0.0.1:{port}"))
            .env("FEDP2EFT_DEADLINE_CHECK_MS", "100")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(r) = server.http.get(server.url("/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(server);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("server did not become healthy".into())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: Vec<u8>,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", routes::PAYLOAD_CONTENT_TYPE)
            .body(body)
            .send()
            .await
    }

    pub async fn enroll(
        &self,
        run: &str,
        client: &str,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let enrolled: Enrolled = self
            .http
            .post(self.url(&routes::enroll(run)))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "client": client, "pool": "seen" }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(enrolled.token)
    }

    pub async fn round(&self, run: &str, k: u32) -> reqwest::Result<RoundStatus> {
        self.http
            .get(self.url(&routes::round(run, k)))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await
    }

    pub fn kill9(&mut self) -> std::io::Result<()> {
        self.child.kill()?; // SIGKILL on Unix: no shutdown code runs
        self.child.wait()?;
        Ok(())
    }
}

/// A failing test must not leave a server running.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// GET with a bearer token, the body's bytes on 2xx.
    pub async fn get_bytes(
        &self,
        path: &str,
        token: &str,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        let reply = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?;
        Ok(reply.bytes().await?.to_vec())
    }

    /// Round k's status once it is final (φ_{k+1} committed, or failed). The status says
    /// `closed` from `closing` on, and the request that completed a round may answer before
    /// the round is aggregated: when a deadline check (of this or another process) took the
    /// round's lock first, the aggregation runs there.
    pub async fn finished_round(
        &self,
        run: &str,
        k: u32,
    ) -> Result<RoundStatus, Box<dyn std::error::Error + Send + Sync>> {
        let started = Instant::now();
        loop {
            let status = self.round(run, k).await?;
            if status.state == RoundState::Failed || status.aggregate_sha256.is_some() {
                return Ok(status);
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!("{run} round {k} never finished").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of an unlabelled or labelled sample in `/metrics`, e.g.
    /// `fedp2eft_rounds_completed_total{outcome="aggregated"}`.
    pub async fn metric(
        &self,
        sample: &str,
    ) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let prefix = format!("{sample} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .ok_or_else(|| format!("no sample {sample} in /metrics"))?;
        Ok(line[prefix.len()..].trim().parse()?)
    }
}
