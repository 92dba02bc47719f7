//! Load benchmark of the federation server (a benchmark, not a test: it asserts no times).
//!
//! Starts the real `fedp2eft-server` binary as a child process (SQLite in a temporary directory,
//! so its peak RSS is its own), creates a run with a PSG-sized layout (default: the embedded
//! default model's, L = 74, r_max = 32, hidden_mul 2), enrolls `--clients` seen-pool clients
//! with fraction 1.0 so that all are selected in round 0, and then, over loopback HTTP with one
//! shared connection pool and at most `--concurrency` requests in flight:
//!
//! 1. every client polls its task and downloads φ_0 (download latency);
//! 2. every client uploads a random finite update with a random sample count (upload latency,
//!    updates/s), while the round's status is polled to time its aggregation;
//! 3. the aggregate φ_1 is downloaded and compared with wire's FedAvg of the accepted updates,
//!    computed here (every accepted update must be in it);
//! 4. every client re-uploads the identical update (idempotent: 200, `duplicate: true`).
//!
//! `scripts/bench-server.sh` builds it in release and writes `bench/results/`. Run directly:
//! `cargo run --release -p fedp2eft-server --example load -- --clients 1000`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use axum::body::Bytes;
use clap::Parser;
use fedp2eft_wire::routes::{self, PAYLOAD_CONTENT_TYPE};
use fedp2eft_wire::{
    sha256_hex, CreateRun, Enrolled, FedAvgAccumulator, Limits, PsgLayout, PsgParams, PsgSpec,
    RoundMeta, RoundState, RoundStatus, Task, TensorData, UpdateMeta, UploadAccepted,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

const ADMIN: &str = "load-benchmark-admin-token";
const RUN: &str = "load";
/// Largest |Δ| allowed between the server's φ_1 and the FedAvg computed here.
const TOLERANCE: f64 = 1e-6;
/// How often the round's status is polled while waiting for its aggregation.
const POLL: Duration = Duration::from_millis(20);
/// Further tries of an upload whose connection broke (no HTTP answer), 1 s apart.
const RETRIES: usize = 3;
/// Kernel TCP counters (/proc/net/netstat, TcpExt) reported per phase: they tell broken or
/// delayed loopback connections (memory pressure, full accept queue) from server errors.
const TCP_COUNTERS: [&str; 7] = [
    "TCPAbortOnTimeout",
    "TCPAbortOnMemory",
    "TCPMemoryPressures",
    "TCPRcvQDrop",
    "ListenOverflows",
    "TCPTimeouts",
    "TCPAbortOnData",
];

#[derive(Parser, Debug)]
#[command(about = "Load benchmark: N concurrent clients upload PSG-sized updates over HTTP")]
struct Args {
    /// Simulated clients, all selected in round 0.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Requests in flight at most (default: all clients at once).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seeds φ_0, the updates and their sample counts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JSON report; `server-load.md` next to it is regenerated from every `server-load-*.json`
    /// there.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The server binary (default: `fedp2eft-server` next to this example's directory).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// PSG layout: L (adapted linears).
    #[arg(long, default_value_t = 74)]
    layers: usize,
    #[arg(long, default_value_t = 32)]
    r_max: usize,
    #[arg(long, default_value_t = 2)]
    hidden_mul: usize,
    /// Copy the server's log (RUST_LOG=info) here at the end.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Give up waiting for the aggregation after this many seconds.
    #[arg(long, default_value_t = 600)]
    wait_s: u64,
}

/// The server as a child process with its own data directory and log file.
struct Server {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(bin: &Path, http: &reqwest::Client) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        // The default configuration, except the address and data directory: the body limit
        // (256 MiB, then the run's exact payload size) already admits PSG-sized updates.
        let child = Command::new(bin)
            .env("FEDP2EFT_ADMIN_TOKEN", ADMIN)
            .env("FEDP2EFT_DATA_DIR", dir.path().join("data"))
            .env("FEDP2EFT_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("FEDP2EFT_DATABASE_URL")
            .env_remove("DATABASE_URL")
            // tracing's fmt subscriber writes to stdout.
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited at start ({status}); log: {}",
                    server.log()
                );
            }
            if let Ok(r) = http.get(server.url("/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(server);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server did not become healthy; log: {}", server.log())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Peak and current resident set of the server process, MiB.
    fn rss_mib(&self) -> Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        Ok((
            proc_kib(&status, "VmHWM")? / 1024.0,
            proc_kib(&status, "VmRSS")? / 1024.0,
        ))
    }

    /// Bytes on disk of the data directory (database and WAL).
    fn data_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.path().join("data"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// SIGTERM (graceful shutdown), then SIGKILL if it has not exited within 30 s.
    fn stop(&mut self) -> Result<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok("killed after 30 s".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn proc_kib(status: &str, key: &str) -> Result<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc status"))
}

/// What every client task needs: the shared HTTP client (one connection pool) and the tokens.
struct Ctx {
    http: reqwest::Client,
    base: String,
    tokens: Vec<String>,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn round_status(&self) -> Result<RoundStatus> {
        Ok(self
            .http
            .get(self.url(&routes::round(RUN, 0)))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

/// One request's timing (seconds from the phase start) and outcome.
#[derive(Debug, Clone)]
struct Sample {
    start_s: f64,
    end_s: f64,
    /// Ok(duplicate) for an accepted upload; the HTTP status and error code, or the transport
    /// failure, otherwise.
    outcome: Result<bool, String>,
}

impl Sample {
    fn latency_ms(&self) -> f64 {
        (self.end_s - self.start_s) * 1000.0
    }
}

/// Runs `task(i)` for every client, at most `concurrency` at a time. A task's clock starts
/// when it gets its permit, so waiting for the limit is not counted as latency.
async fn phase<T, F, Fut>(n: usize, concurrency: usize, task: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let limit = limit.clone();
            let fut = task(i);
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await?);
    }
    Ok(out)
}

fn error_of(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // The innermost cause says what happened (reset, refused, closed...).
    let mut cause: &dyn std::error::Error = e;
    while let Some(s) = cause.source() {
        cause = s;
    }
    format!("{kind}: {cause}")
}

/// Whether a failure is the connection's (no HTTP answer) rather than the server's refusal
/// (`"<status> <code>"`).
fn is_transport(outcome: &Result<bool, String>) -> bool {
    matches!(outcome, Err(e) if !e.starts_with(|c: char| c.is_ascii_digit()))
}

/// Re-sends the uploads whose connection broke, as a real client does: up to `RETRIES` more
/// times, 1 s apart. A retry of an update that was stored before its answer was lost is
/// answered `duplicate: true`. Returns every client's final outcome and how many were retried.
async fn retry_broken(
    ctx: &Arc<Ctx>,
    bodies: &[(Bytes, u64)],
    samples: &[Sample],
) -> Result<(Vec<Result<bool, String>>, usize)> {
    let mut outcomes: Vec<_> = samples.iter().map(|s| s.outcome.clone()).collect();
    let retried = outcomes.iter().filter(|o| is_transport(o)).count();
    for _ in 0..RETRIES {
        let broken: Vec<usize> = (0..outcomes.len())
            .filter(|&i| is_transport(&outcomes[i]))
            .collect();
        if broken.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = Instant::now();
        let again = phase(broken.len(), broken.len(), |j| {
            upload(ctx.clone(), broken[j], bodies[broken[j]].0.clone(), t)
        })
        .await?;
        for (&i, s) in broken.iter().zip(again) {
            outcomes[i] = s.outcome;
        }
    }
    Ok((outcomes, retried))
}

/// System-wide TcpExt counters (other processes' loopback traffic counts too, which on a
/// benchmark machine is next to nothing).
fn tcp_counters() -> Vec<i64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut values = vec![0; TCP_COUNTERS.len()];
    for pair in lines.chunks(2) {
        let [names, nums] = pair else { continue };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, num) in names.split_whitespace().zip(nums.split_whitespace()) {
            if let Some(k) = TCP_COUNTERS.iter().position(|c| *c == name) {
                values[k] = num.parse().unwrap_or(0);
            }
        }
    }
    values
}

/// The counters that changed since `before`.
fn tcp_delta(before: &[i64]) -> Value {
    let now = tcp_counters();
    let changed: serde_json::Map<String, Value> = TCP_COUNTERS
        .iter()
        .zip(now.iter().zip(before))
        .filter(|(_, (a, b))| a != b)
        .map(|(name, (a, b))| (name.to_string(), json!(a - b)))
        .collect();
    Value::Object(changed)
}

/// Status and code of a refused request (`{"error": {"code": ...}}`).
async fn refusal(r: reqwest::Response) -> String {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    format!("{status} {}", body["error"]["code"].as_str().unwrap_or("?"))
}

async fn upload(ctx: Arc<Ctx>, i: usize, body: Bytes, t0: Instant) -> Sample {
    let start = Instant::now();
    let sent = ctx
        .http
        .post(ctx.url(&routes::update(RUN, 0)))
        .bearer_auth(&ctx.tokens[i])
        .header(reqwest::header::CONTENT_TYPE, PAYLOAD_CONTENT_TYPE)
        .body(body)
        .send()
        .await;
    let outcome = match sent {
        Ok(r) if r.status().is_success() => match r.json::<UploadAccepted>().await {
            Ok(a) => Ok(a.duplicate),
            Err(e) => Err(error_of(&e)),
        },
        Ok(r) => Err(refusal(r).await),
        Err(e) => Err(error_of(&e)),
    };
    Sample {
        start_s: (start - t0).as_secs_f64(),
        end_s: t0.elapsed().as_secs_f64(),
        outcome,
    }
}

/// Task poll then download of φ_0, as a client starting round 0 does.
async fn fetch(ctx: Arc<Ctx>, i: usize, t0: Instant) -> (Sample, Sample, Option<Bytes>) {
    let token = &ctx.tokens[i];
    let start = Instant::now();
    let task = async {
        let r = ctx
            .http
            .get(ctx.url(&routes::task(RUN)))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| error_of(&e))?;
        if !r.status().is_success() {
            return Err(refusal(r).await);
        }
        match r.json::<Task>().await.map_err(|e| error_of(&e))? {
            Task::Train(t) if t.psg.round == 0 => Ok(t),
            other => Err(format!("unexpected task {other:?}")),
        }
    }
    .await;
    let task_sample = Sample {
        start_s: (start - t0).as_secs_f64(),
        end_s: t0.elapsed().as_secs_f64(),
        outcome: task.as_ref().map(|_| false).map_err(Clone::clone),
    };
    let Ok(task) = task else {
        let skipped = Sample {
            outcome: Err("no task".into()),
            ..task_sample.clone()
        };
        return (task_sample, skipped, None);
    };
    let start = Instant::now();
    let download = async {
        let r = ctx
            .http
            .get(ctx.url(&task.psg.psg))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| error_of(&e))?;
        if !r.status().is_success() {
            return Err(refusal(r).await);
        }
        r.bytes().await.map_err(|e| error_of(&e))
    }
    .await;
    let download_sample = Sample {
        start_s: (start - t0).as_secs_f64(),
        end_s: t0.elapsed().as_secs_f64(),
        outcome: download.as_ref().map(|_| false).map_err(Clone::clone),
    };
    (task_sample, download_sample, download.ok())
}

/// Latency percentiles (nearest rank) of the successful samples, ms.
fn latency_stats(samples: &[Sample]) -> Value {
    let mut ms: Vec<f64> = samples
        .iter()
        .filter(|s| s.outcome.is_ok())
        .map(Sample::latency_ms)
        .collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return json!({ "n": 0 });
    }
    let pct = |p: f64| ms[((p / 100.0 * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    let round = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "n": ms.len(),
        "p50_ms": round(pct(50.0)),
        "p90_ms": round(pct(90.0)),
        "p99_ms": round(pct(99.0)),
        "max_ms": round(pct(100.0)),
        "mean_ms": round(ms.iter().sum::<f64>() / ms.len() as f64),
    })
}

/// Failures grouped by outcome, e.g. `{"500 internal": 3}`.
fn failures(samples: &[Sample]) -> Value {
    let outcomes: Vec<_> = samples.iter().map(|s| s.outcome.clone()).collect();
    final_failures(&outcomes)
}

fn final_failures(outcomes: &[Result<bool, String>]) -> Value {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for e in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        *counts.entry(e.clone()).or_default() += 1;
    }
    json!(counts)
}

/// Uniform values in [-1, 1) for every tensor of `spec`, from `rng`.
fn random_params(spec: &PsgSpec, rng: &mut ChaCha8Rng) -> Result<PsgParams> {
    let mut p = PsgParams::default();
    for (name, shape) in spec.tensors() {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        p.insert(name.clone(), TensorData::new(shape.clone(), data)?)?;
    }
    Ok(p)
}

/// Client i's update body (seeded by (seed, i), so it can be rebuilt) and sample count.
fn update_body(spec: &PsgSpec, seed: u64, i: usize) -> Result<(Bytes, u64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(i as u64 + 1); // stream 0 is φ_0's
    let n = rng.random_range(1..=10_000u64);
    let params = random_params(spec, &mut rng)?;
    let body = params.encode(&UpdateMeta::new(RUN, 0, client_id(i), n))?;
    Ok((Bytes::from(body), n))
}

fn client_id(i: usize) -> String {
    format!("c{i:05}")
}

/// Times (UTC seconds of day, from the server's log) of the first and last stored update and
/// of round 0's closing and closed events. Same clock as this process: both read the system
/// time on one machine.
#[derive(Debug, Default)]
struct ServerEvents {
    first_stored: Option<f64>,
    last_stored: Option<f64>,
    closing: Option<f64>,
    closed: Option<f64>,
    stored: usize,
}

fn server_events(log: &str) -> ServerEvents {
    let mut ev = ServerEvents::default();
    for line in log.lines() {
        // `2026-11-26T07:16:00.123456Z  INFO fedp2eft_server::coordinator: round closed ...`
        let Some(t) = line.split_whitespace().next().and_then(seconds_of_day) else {
            continue;
        };
        if line.contains(": update stored") {
            ev.stored += 1;
            ev.first_stored.get_or_insert(t);
            ev.last_stored = Some(t);
        } else if line.contains(": round closing") && line.contains("round=0") {
            ev.closing = Some(t);
        } else if line.contains(": round closed") && line.contains("round=0") {
            ev.closed = Some(t);
        }
    }
    ev
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` → seconds since midnight UTC.
fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn now_seconds_of_day() -> f64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_secs_f64() % 86_400.0
}

/// b − a in seconds for two times of day, across one midnight at most.
fn tod_diff(a: f64, b: f64) -> f64 {
    let d = b - a;
    if d < -43_200.0 {
        d + 86_400.0
    } else {
        d
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn cpu_model() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model} ({threads})")
}

fn today() -> String {
    command_output("date", &["-u", "+%F"])
}

fn git_commit() -> String {
    command_output("git", &["rev-parse", "--short=12", "HEAD"])
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_string())
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Other processes' load skews every figure on a shared machine: recorded with them.
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    let n = args.clients;
    ensure!(n >= 1, "--clients must be at least 1");
    let concurrency = args.concurrency.unwrap_or(n).max(1);
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        // target/<profile>/examples/load → target/<profile>/fedp2eft-server
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("no directory above the example")?
            .join("fedp2eft-server"),
    };
    let layout = PsgLayout {
        kind: fedp2eft_wire::NetKind::Psg,
        hidden: None,
        base_model: "multilingual-e5-small".into(),
        num_layers: args.layers,
        r_max: args.r_max,
        hidden_mul: args.hidden_mul,
        // core's FEATURE_LAYOUT (the server does not depend on core).
        feature_layout: "mean-sd-interleaved/adapted-linear-input/module-order/v1".into(),
    };
    let spec = layout.spec()?;
    let limits = Limits::for_spec(&spec);
    // Generous: a request waiting behind the limit is not timed, one in flight that long is
    // a failure worth reporting.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(usize::MAX)
        .build()?;
    let mut server = Server::start(&bin, &http).await?;
    let base = server.base.clone();
    println!(
        "server {} (pid {}), data in {}",
        base,
        server.child.id(),
        server.dir.path().display()
    );

    // Run: fraction 1.0 selects every enrolled client; a day's deadline and a full quorum, so
    // round 0 closes exactly when the last client reported.
    let run = CreateRun {
        seed: args.seed,
        fraction: 1.0,
        rounds: 2,
        deadline_s: 24 * 3600,
        min_completion: 1.0,
        ..CreateRun::new(RUN, layout.clone())
    };
    let mut rng0 = ChaCha8Rng::seed_from_u64(args.seed);
    let phi0 = random_params(&spec, &mut rng0)?;
    let created = http
        .post(format!("{base}{}", routes::CREATE_RUN))
        .bearer_auth(ADMIN)
        .header(reqwest::header::CONTENT_TYPE, PAYLOAD_CONTENT_TYPE)
        .body(phi0.encode(&run)?)
        .send()
        .await?;
    ensure!(
        created.status() == 201,
        "create run: {}",
        refusal(created).await
    );

    let t = Instant::now();
    let enrolled = phase(n, concurrency.min(64), |i| {
        let (http, url) = (http.clone(), format!("{base}{}", routes::enroll(RUN)));
        async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN)
                .json(&json!({ "client": client_id(i), "pool": "seen" }))
                .send()
                .await?
                .error_for_status()?;
            Ok::<_, reqwest::Error>(r.json::<Enrolled>().await?.token)
        }
    })
    .await?;
    let tokens = enrolled.into_iter().collect::<Result<Vec<_>, _>>()?;
    let enroll_s = t.elapsed().as_secs_f64();
    println!("enrolled {n} clients in {enroll_s:.1} s");
    let ctx = Arc::new(Ctx {
        http: http.clone(),
        base: base.clone(),
        tokens,
    });

    // Phase 1: task poll (the first one opens round 0) and download of φ_0.
    let tcp0 = tcp_counters();
    let t0 = Instant::now();
    let fetched = phase(n, concurrency, |i| fetch(ctx.clone(), i, t0)).await?;
    let fetch_s = t0.elapsed().as_secs_f64();
    let fetch_tcp = tcp_delta(&tcp0);
    let (task_samples, download_samples): (Vec<_>, Vec<_>) = fetched
        .iter()
        .map(|(t, d, _)| (t.clone(), d.clone()))
        .unzip();
    let downloads: Vec<Bytes> = fetched.into_iter().filter_map(|(_, _, b)| b).collect();
    let phi0_bytes = downloads
        .first()
        .context("no client downloaded φ_0")?
        .clone();
    let phi0_sha = sha256_hex(&phi0_bytes);
    let identical = downloads.iter().filter(|b| **b == phi0_bytes).count();
    drop(downloads);
    let (served0, _) = PsgParams::decode::<RoundMeta>(&phi0_bytes, &spec, &limits)?;
    ensure!(served0.bit_eq(&phi0), "the served φ_0 is not the φ_0 sent");
    println!(
        "tasks + downloads of φ_0 ({} bytes): {identical}/{n} identical, {fetch_s:.1} s",
        phi0_bytes.len()
    );

    // The updates, built before the upload phase so that it times HTTP and the server only.
    let t = Instant::now();
    let bodies: Vec<(Bytes, u64)> = {
        let spec = spec.clone();
        let seed = args.seed;
        tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|i| update_body(&spec, seed, i))
                .collect::<Result<Vec<_>>>()
        })
        .await??
    };
    let update_bytes = bodies[0].0.len();
    println!(
        "built {n} updates of {update_bytes} bytes ({} parameters) in {:.1} s",
        spec.num_elements(),
        t.elapsed().as_secs_f64()
    );

    // Phase 2: concurrent uploads, the round's status polled alongside.
    let wait = Duration::from_secs(args.wait_s);
    let tcp0 = tcp_counters();
    let t0 = Instant::now();
    let t0_tod = now_seconds_of_day();
    let poller = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let (mut closed, mut aggregated) = (None, None);
            while t0.elapsed() < wait {
                if let Ok(s) = ctx.round_status().await {
                    if s.state != RoundState::Open && closed.is_none() {
                        closed = Some(t0.elapsed().as_secs_f64());
                    }
                    if s.aggregate_sha256.is_some() || s.state == RoundState::Failed {
                        aggregated = Some(t0.elapsed().as_secs_f64());
                        break;
                    }
                }
                tokio::time::sleep(POLL).await;
            }
            (closed, aggregated)
        })
    };
    let uploads = phase(n, concurrency, |i| {
        upload(ctx.clone(), i, bodies[i].0.clone(), t0)
    })
    .await?;
    let responses_s = t0.elapsed().as_secs_f64();
    let (final_uploads, upload_retried) = retry_broken(&ctx, &bodies, &uploads).await?;
    let (polled_closed, polled_aggregated) = poller.await?;
    let upload_tcp = tcp_delta(&tcp0);
    let accepted: Vec<usize> = (0..n).filter(|&i| final_uploads[i].is_ok()).collect();
    println!(
        "uploads: {} accepted, {} not ({upload_retried} retried after a broken connection), \
         last answer after {responses_s:.2} s",
        accepted.len(),
        n - accepted.len()
    );

    // Server-side times from its log (one clock with ours).
    let events = server_events(&server.log());
    let ingest_s = events.last_stored.map(|t| tod_diff(t0_tod, t));
    let aggregation_s = match (events.last_stored, events.closed) {
        (Some(a), Some(b)) => Some(tod_diff(a, b)),
        _ => None,
    };
    let closing_to_closed_s = match (events.closing, events.closed) {
        (Some(a), Some(b)) => Some(tod_diff(a, b)),
        _ => None,
    };
    let polled_aggregation_s = match (events.last_stored, polled_aggregated) {
        (Some(last), Some(agg)) => Some(agg - tod_diff(t0_tod, last)),
        _ => None,
    };

    // Correctness: φ_1 is the FedAvg of exactly the accepted updates.
    let status = ctx.round_status().await?;
    let phi1_bytes = http
        .get(format!("{base}{}", routes::psg(RUN, 1)))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let t = Instant::now();
    let expected = {
        let (spec, limits) = (spec.clone(), limits);
        let accepted_bodies: Vec<_> = accepted.iter().map(|&i| bodies[i].clone()).collect();
        tokio::task::spawn_blocking(move || -> Result<PsgParams> {
            let mut acc = FedAvgAccumulator::with_spec(spec.clone());
            for (body, n) in &accepted_bodies {
                let (params, meta) = PsgParams::decode::<UpdateMeta>(body, &spec, &limits)?;
                ensure!(meta.num_samples == *n, "sample count changed");
                acc.add(&params, *n)?;
            }
            Ok(acc.finish()?)
        })
        .await??
    };
    let verify_s = t.elapsed().as_secs_f64();
    let (phi1, meta1) = PsgParams::decode::<RoundMeta>(&phi1_bytes, &spec, &limits)?;
    let mut max_abs_diff = 0f64;
    let mut bit_equal = 0usize;
    for ((_, a), (_, b)) in phi1.iter().zip(expected.iter()) {
        for (x, y) in a.data().iter().zip(b.data()) {
            max_abs_diff = max_abs_diff.max((f64::from(*x) - f64::from(*y)).abs());
            bit_equal += usize::from(x.to_bits() == y.to_bits());
        }
    }
    let checks = [
        ("round aggregated", status.state == RoundState::Closed),
        (
            "reported == accepted",
            status.reported == accepted.len() as u64,
        ),
        ("every upload accepted", accepted.len() == n),
        ("φ_1 is round 1's", meta1.round == 1),
        (
            "φ_1 digest == round's aggregate_sha256",
            status.aggregate_sha256.as_deref() == Some(sha256_hex(&phi1_bytes).as_str()),
        ),
        ("max |Δ| ≤ 1e-6", max_abs_diff <= TOLERANCE),
        ("all φ_0 downloads identical", identical == n),
        (
            "φ_0 digest == round's psg_sha256",
            status.psg_sha256 == phi0_sha,
        ),
    ];
    let passed = checks.iter().all(|(_, ok)| *ok);
    for (name, ok) in &checks {
        println!("  [{}] {name}", if *ok { "ok" } else { "FAIL" });
    }
    println!(
        "φ_1 vs FedAvg here: max |Δ| = {max_abs_diff:.3e}, {bit_equal}/{} bit-identical",
        spec.num_elements()
    );

    // Phase 3: every client re-sends its identical update.
    let tcp0 = tcp_counters();
    let t0d = Instant::now();
    let duplicates = phase(n, concurrency, |i| {
        upload(ctx.clone(), i, bodies[i].0.clone(), t0d)
    })
    .await?;
    let duplicates_s = t0d.elapsed().as_secs_f64();
    let (final_duplicates, dup_retried) = retry_broken(&ctx, &bodies, &duplicates).await?;
    let duplicates_tcp = tcp_delta(&tcp0);
    let dup_ok = final_duplicates.iter().filter(|o| **o == Ok(true)).count();
    let after = ctx.round_status().await?;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let stored_total = metric(&metrics, "fedp2eft_uploads_accepted_total").unwrap_or(-1.0);
    let dup_total = metric(&metrics, "fedp2eft_uploads_duplicate_total").unwrap_or(-1.0);
    let dup_checks = [
        ("every re-upload answered duplicate", dup_ok == n),
        ("reported unchanged", after.reported == status.reported),
        (
            "each update stored once (uploads_accepted_total == accepted)",
            stored_total == accepted.len() as f64,
        ),
    ];
    for (name, ok) in &dup_checks {
        println!("  [{}] {name}", if *ok { "ok" } else { "FAIL" });
    }
    let dup_passed = dup_checks.iter().all(|(_, ok)| *ok);

    let (rss_peak_mib, rss_now_mib) = server.rss_mib()?;
    let data_bytes = server.data_bytes();
    let (client_peak_mib, _) = {
        let status = std::fs::read_to_string("/proc/self/status")?;
        (proc_kib(&status, "VmHWM")? / 1024.0, ())
    };
    let exit = server.stop()?;
    if let Some(path) = &args.server_log {
        std::fs::write(path, server.log())?;
    }

    let updates_per_s = ingest_s.map(|s| accepted.len() as f64 / s);
    let report = json!({
        "date": today(),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "loadavg_1m_at_start": loadavg,
        "clients": n,
        "concurrency": concurrency,
        "seed": args.seed,
        "layout": { "num_layers": layout.num_layers, "r_max": layout.r_max, "hidden_mul": layout.hidden_mul },
        "psg_parameters": spec.num_elements(),
        "update_bytes": update_bytes,
        "psg_bytes": phi0_bytes.len(),
        "enroll_s": r3(enroll_s),
        "fetch": {
            "wall_s": r3(fetch_s),
            "task": latency_stats(&task_samples),
            "download": latency_stats(&download_samples),
            "failures": failures(&download_samples),
            "kernel_tcp": fetch_tcp,
        },
        "upload": {
            "accepted": accepted.len(),
            "not_accepted": n - accepted.len(),
            "first_try_failures": failures(&uploads),
            "retried_broken_connections": upload_retried,
            "final_failures": final_failures(&final_uploads),
            "kernel_tcp": upload_tcp,
            "ingest_s": ingest_s.map(r3),
            "updates_per_s": updates_per_s.map(|x| (x * 10.0).round() / 10.0),
            "mb_per_s": ingest_s.map(|s| r3(accepted.len() as f64 * update_bytes as f64 / s / 1e6)),
            "last_answer_s": r3(responses_s),
            "latency": latency_stats(&uploads),
        },
        "aggregation": {
            "last_update_to_aggregated_s": aggregation_s.map(r3),
            "closing_to_closed_s": closing_to_closed_s.map(r3),
            "polled_last_update_to_aggregated_s": polled_aggregation_s.map(r3),
            "polled_closed_at_s": polled_closed.map(r3),
            "polled_aggregated_at_s": polled_aggregated.map(r3),
            "server_logged_updates": events.stored,
        },
        "correctness": {
            "passed": passed,
            "round_reported": status.reported,
            "accepted": accepted.len(),
            "max_abs_diff": max_abs_diff,
            "bit_identical": bit_equal,
            "elements": spec.num_elements(),
            "client_fedavg_s": r3(verify_s),
            "checks": checks.iter().map(|(k, v)| json!({ "check": k, "ok": v })).collect::<Vec<_>>(),
        },
        "duplicates": {
            "passed": dup_passed,
            "answered_duplicate": dup_ok,
            "first_try_failures": failures(&duplicates),
            "retried_broken_connections": dup_retried,
            "final_failures": final_failures(&final_duplicates),
            "server_duplicates_total": dup_total,
            "kernel_tcp": duplicates_tcp,
            "wall_s": r3(duplicates_s),
            "latency": latency_stats(&duplicates),
        },
        "server": {
            "peak_rss_mib": r3(rss_peak_mib),
            "rss_at_end_mib": r3(rss_now_mib),
            "data_bytes": data_bytes,
            "exit": exit,
        },
        "bench_peak_rss_mib": r3(client_peak_mib),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
        let dir = out.parent().unwrap_or(Path::new("."));
        let table = dir.join("server-load.md");
        std::fs::write(&table, markdown(dir)?)?;
        println!("wrote {} and {}", out.display(), table.display());
    }
    ensure!(
        passed && dup_passed,
        "a correctness check failed (see above)"
    );
    Ok(())
}

/// `server-load.md`: one row per `server-load-*.json` in `dir`, oldest first.
fn markdown(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("server-load-") && f.ends_with(".json"))
        })
        .collect();
    files.sort();
    let mut md = String::from(
        "# Server load benchmark\n\n\
         Written by `scripts/bench-server.sh` (`server/examples/load.rs`; one JSON file per run, \
         `server-load-<date>[-<variant>].json`, this table regenerated from all of them). The release `fedp2eft-server` runs as a child \
         process on SQLite (WAL, `synchronous = FULL`) in a temporary directory, default \
         configuration; N clients (tokio tasks sharing one reqwest connection pool, loopback \
         HTTP/1.1) are all selected in round 0 of a run with the default model's PSG layout \
         (L = 74, r_max = 32, hidden_mul 2). Client and server share the machine's CPUs; `load` is the 1-minute load average \
         when the benchmark started (other processes included).\n\n\
         - updates/s: accepted uploads / (first upload sent → last update committed, from the \
         server's log). Upload latency: request sent → answer received; the upload that \
         completes the round is answered after the aggregation, so it is the max.\n\
         - aggregation: last update committed → round closed with φ_1 committed (server log).\n\
         - check: φ_1 downloaded from the server vs wire's FedAvg (f64) of the accepted updates \
         computed by the benchmark, max |Δ| ≤ 1e-6, and the round's `reported` == accepted; \
         then every client re-uploads its identical update (must be 200 `duplicate: true`).\n\
         - retried: requests whose loopback connection broke without an HTTP answer (see \
         `kernel_tcp` in the JSON), re-sent by the benchmark as a real client would (uploads / \
         re-uploads).\n\
         - peak RSS: the server's VmHWM at the end.\n\n\
         | date | commit | CPU (threads) | load | clients | concurrency | update MB | updates/s | \
         upload p50 / p90 / p99 / max ms | download p50 / p99 ms | aggregation s | \
         server peak RSS MiB | duplicate p50 / p99 ms | retried | max abs Δ | check |\n\
         |---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---|---|---:|---|\n",
    );
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f)?)
            .with_context(|| format!("reading {}", f.display()))?;
        let num = |p: &str| v.pointer(p).and_then(Value::as_f64);
        let fmt = |p: &str, digits: usize| {
            num(p).map_or_else(|| "–".to_string(), |x| format!("{x:.digits$}"))
        };
        let lat = |p: &str, keys: &[&str]| {
            keys.iter()
                .map(|k| fmt(&format!("{p}/{k}"), 0))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let passed = v.pointer("/correctness/passed").and_then(Value::as_bool) == Some(true)
            && v.pointer("/duplicates/passed").and_then(Value::as_bool) == Some(true);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            v["date"].as_str().unwrap_or("?"),
            v["commit"].as_str().unwrap_or("?"),
            v["cpu"].as_str().unwrap_or("?"),
            fmt("/loadavg_1m_at_start", 1),
            fmt("/clients", 0),
            fmt("/concurrency", 0),
            num("/update_bytes").map_or_else(|| "–".into(), |b| format!("{:.2}", b / 1e6)),
            fmt("/upload/updates_per_s", 1),
            lat("/upload/latency", &["p50_ms", "p90_ms", "p99_ms", "max_ms"]),
            lat("/fetch/download", &["p50_ms", "p99_ms"]),
            fmt("/aggregation/last_update_to_aggregated_s", 2),
            fmt("/server/peak_rss_mib", 0),
            lat("/duplicates/latency", &["p50_ms", "p99_ms"]),
            fmt("/upload/retried_broken_connections", 0),
            fmt("/duplicates/retried_broken_connections", 0),
            num("/correctness/max_abs_diff").map_or_else(|| "–".into(), |x| format!("{x:.1e}")),
            if passed { "pass" } else { "FAIL" },
        ));
    }
    Ok(md)
}
