//! The HTTP client of a federated round (feature `client`): poll for a task, download φ_k,
//! train it locally (`RoundWork`: FedP²EFT's stage 1 + stage 2, or FedL2P's meta-training),
//! upload. Blocking by design (the FFI calls it from a worker
//! thread); transient failures (connection errors, 5xx, 429) are retried with exponential
//! backoff, and every wait checks the cancellation token.
use std::time::Duration;

use fedp2eft_wire::{
    routes, ErrorBody, Limits, PsgLayout, PsgParams, RoundMeta, RunStatus, Task, UpdateMeta,
    UploadAccepted,
};
use reqwest::blocking::{Client, RequestBuilder, Response};
use routes::PAYLOAD_CONTENT_TYPE;

use super::convert::{from_params, lr_net_from_params, lr_net_to_params, to_params};
use super::round::{
    client_round, fedl2p_round, ClientUpdate, Fedl2pRoundConfig, Fedl2pUpdate, RoundConfig,
};
use crate::control::Control;
use crate::data::ClientData;
use crate::model::{SeqClassifier, Tokenize};
use crate::psg::PsgConfig;
use crate::{Error, Result};

/// One client's local work in a round of some federated net: from the round's global
/// parameters (already checked against `layout`) to the parameters it uploads, their
/// FedAvg weight (local examples) and what it reports.
pub trait RoundWork {
    type Update;
    fn train(
        &self,
        global: &PsgParams,
        layout: &PsgLayout,
        status: &RunStatus,
        ctl: &Control,
    ) -> Result<(PsgParams, usize, Self::Update)>;
}

/// A simulated or real device's local round: its base model, tokenizer and data, and the
/// settings of the method's round (`C`).
pub struct LocalWork<'a, C> {
    pub base: &'a SeqClassifier,
    pub tok: &'a dyn Tokenize,
    pub data: &'a ClientData,
    pub cfg: &'a C,
}

/// FedP²EFT's round (stage 1 + stage 2) for a run that federates the PSG; stage 2 as the run
/// prescribes it, not this client's defaults.
pub type PsgWork<'a> = LocalWork<'a, RoundConfig>;

/// FedL2P's round (meta-training of the learning-rate net) for a run that federates it; the
/// LoRA rank is the layout's `r_max`.
pub type Fedl2pWork<'a> = LocalWork<'a, Fedl2pRoundConfig>;

impl RoundWork for PsgWork<'_> {
    type Update = ClientUpdate;
    fn train(
        &self,
        global: &PsgParams,
        layout: &PsgLayout,
        status: &RunStatus,
        ctl: &Control,
    ) -> Result<(PsgParams, usize, ClientUpdate)> {
        let psg_cfg = PsgConfig {
            stage2_steps: status.stage2.steps as usize,
            stage2_lr: status.stage2.lr,
            ..PsgConfig::default()
        };
        let global = from_params(layout, psg_cfg, global)?;
        let update = client_round(self.base, self.tok, self.data, &global, self.cfg, ctl)?;
        Ok((to_params(&update.psg)?, update.num_samples, update))
    }
}

impl RoundWork for Fedl2pWork<'_> {
    type Update = Fedl2pUpdate;
    fn train(
        &self,
        global: &PsgParams,
        layout: &PsgLayout,
        _status: &RunStatus,
        ctl: &Control,
    ) -> Result<(PsgParams, usize, Fedl2pUpdate)> {
        let global = lr_net_from_params(layout, self.cfg.meta.clone(), global)?;
        let rank = layout.r_max;
        let update = fedl2p_round(self.base, self.tok, self.data, &global, rank, self.cfg, ctl)?;
        Ok((lr_net_to_params(&update.net)?, update.num_samples, update))
    }
}

/// Retries of transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// One enrolled client of one run on one server.
pub struct FedClient {
    base: String,
    run: String,
    token: String,
    http: Client,
    pub retry: RetryPolicy,
}

/// What `join_round` / `join_with` did.
pub enum RoundOutcome<U = ClientUpdate> {
    /// Trained and uploaded round `round`.
    Uploaded {
        round: u32,
        accepted: UploadAccepted,
        update: Box<U>,
    },
    /// The run is over; φ_R is at this round.
    Finished { round: u32 },
}

fn http_err(e: reqwest::Error) -> Error {
    Error::Server {
        status: e.status().map(|s| s.as_u16()),
        code: "transport".into(),
        message: e.to_string(),
    }
}

fn sleep_cancellable(d: Duration, ctl: &Control) -> Result<()> {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        ctl.cancel.check()?;
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    ctl.cancel.check()
}

impl FedClient {
    pub fn new(server: &str, run: &str, token: &str) -> Result<Self> {
        let http = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(http_err)?;
        Ok(Self {
            base: server.trim_end_matches('/').to_string(),
            run: run.to_string(),
            token: token.to_string(),
            http,
            retry: RetryPolicy::default(),
        })
    }

    /// Sends `make()` with retries; a 4xx answer becomes `Error::Server` with the wire code.
    fn send(&self, ctl: &Control, make: impl Fn() -> RequestBuilder) -> Result<Response> {
        let mut delay = self.retry.first_delay;
        let mut attempt = 0;
        loop {
            ctl.cancel.check()?;
            attempt += 1;
            let res = make().bearer_auth(&self.token).send();
            let transient = match &res {
                Ok(r) => r.status().is_server_error() || r.status().as_u16() == 429,
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            };
            if transient && attempt < self.retry.attempts {
                tracing::warn!(
                    attempt,
                    "transient failure talking to {}, retrying",
                    self.base
                );
                sleep_cancellable(delay, ctl)?;
                delay = (delay * 2).min(self.retry.max_delay);
                continue;
            }
            let r = res.map_err(http_err)?;
            if r.status().is_success() {
                return Ok(r);
            }
            let status = r.status().as_u16();
            let text = r.text().unwrap_or_default();
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => Error::Server {
                    status: Some(status),
                    code: b.error.code.as_str().to_string(),
                    message: b.error.message,
                },
                Err(_) => Error::Server {
                    status: Some(status),
                    code: "http".into(),
                    message: text.chars().take(200).collect(),
                },
            });
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The run's state and PSG layout.
    pub fn status(&self, ctl: &Control) -> Result<fedp2eft_wire::RunStatus> {
        let url = self.url(&routes::run(&self.run));
        self.send(ctl, || self.http.get(&url))?
            .json()
            .map_err(http_err)
    }

    pub fn task(&self, ctl: &Control) -> Result<Task> {
        let url = self.url(&routes::task(&self.run));
        self.send(ctl, || self.http.get(&url))?
            .json()
            .map_err(http_err)
    }

    /// Downloads φ_round, verified against the run's layout.
    pub fn download(&self, path: &str, layout: &PsgLayout, ctl: &Control) -> Result<PsgParams> {
        let url = self.url(path);
        let bytes = self
            .send(ctl, || self.http.get(&url))?
            .bytes()
            .map_err(http_err)?;
        let spec = layout.spec().map_err(wire)?;
        let (params, _meta): (PsgParams, RoundMeta) =
            PsgParams::decode(&bytes, &spec, &Limits::for_spec(&spec)).map_err(wire)?;
        Ok(params)
    }

    pub fn upload(&self, path: &str, body: Vec<u8>, ctl: &Control) -> Result<UploadAccepted> {
        let url = self.url(path);
        let r = self.send(ctl, || {
            self.http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, PAYLOAD_CONTENT_TYPE)
                .body(body.clone())
        })?;
        r.json().map_err(http_err)
    }

    /// Waits for a training task (or the end of the run), then trains FedP²EFT's stage 1 +
    /// stage 2 and uploads one round.
    #[allow(clippy::too_many_arguments)]
    pub fn join_round(
        &self,
        client_id: &str,
        base: &SeqClassifier,
        tok: &dyn Tokenize,
        data: &ClientData,
        layout: &PsgLayout,
        cfg: &RoundConfig,
        ctl: &Control,
    ) -> Result<RoundOutcome> {
        let work = PsgWork {
            base,
            tok,
            data,
            cfg,
        };
        self.join_with(client_id, layout, &work, ctl)
    }

    /// Waits for a training task (or the end of the run), then runs `work` on the round's
    /// global parameters (checked against `layout` as they download) and uploads the result.
    pub fn join_with<W: RoundWork>(
        &self,
        client_id: &str,
        layout: &PsgLayout,
        work: &W,
        ctl: &Control,
    ) -> Result<RoundOutcome<W::Update>> {
        let train = loop {
            match self.task(ctl)? {
                Task::Train(t) => break t,
                Task::Finished(p) => return Ok(RoundOutcome::Finished { round: p.round }),
                Task::Wait { retry_after_s } => sleep_cancellable(
                    Duration::from_secs(u64::from(retry_after_s.clamp(1, 60))),
                    ctl,
                )?,
            }
        };
        let status = self.status(ctl)?;
        let params = self.download(&train.psg.psg, layout, ctl)?;
        let (out, num_samples, update) = work.train(&params, layout, &status, ctl)?;
        out.check_finite().map_err(wire)?;
        let meta = UpdateMeta::new(&self.run, train.psg.round, client_id, num_samples as u64);
        let body = out.encode(&meta).map_err(wire)?;
        let accepted = self.upload(&train.upload, body, ctl)?;
        Ok(RoundOutcome::Uploaded {
            round: train.psg.round,
            accepted,
            update: Box::new(update),
        })
    }
}

fn wire(e: fedp2eft_wire::Error) -> Error {
    Error::Server {
        status: None,
        code: e.code().as_str().to_string(),
        message: e.to_string(),
    }
}

/// The operator's side: create a run with φ_0 and enroll clients (admin token).
pub struct Admin {
    inner: FedClient,
}

impl Admin {
    pub fn new(server: &str, admin_token: &str) -> Result<Self> {
        Ok(Self {
            inner: FedClient::new(server, "", admin_token)?,
        })
    }

    /// Creates `run` with the initial PSG `psg0` (its layout travels in the payload).
    pub fn create_run(
        &self,
        run: &fedp2eft_wire::CreateRun,
        psg0: &crate::psg::Psg,
        ctl: &Control,
    ) -> Result<fedp2eft_wire::RunCreated> {
        self.create_run_with(run, &to_params(psg0)?, ctl)
    }

    /// Creates `run` with initial parameters of the kind its layout names (a PSG or FedL2P's
    /// learning-rate net).
    pub fn create_run_with(
        &self,
        run: &fedp2eft_wire::CreateRun,
        params0: &PsgParams,
        ctl: &Control,
    ) -> Result<fedp2eft_wire::RunCreated> {
        let body = params0.encode(run).map_err(wire)?;
        let c = &self.inner;
        let url = c.url(routes::CREATE_RUN);
        let r = c.send(ctl, || {
            c.http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, PAYLOAD_CONTENT_TYPE)
                .body(body.clone())
        })?;
        r.json().map_err(http_err)
    }

    /// Enrolls a client into a pool; the answer holds its token (shown only this once).
    pub fn enroll(
        &self,
        run: &str,
        client: &str,
        pool: fedp2eft_wire::Pool,
        ctl: &Control,
    ) -> Result<fedp2eft_wire::Enrolled> {
        let c = &self.inner;
        let url = c.url(&routes::enroll(run));
        let req = fedp2eft_wire::Enroll {
            client: client.to_string(),
            pool,
        };
        c.send(ctl, || c.http.post(&url).json(&req))?
            .json()
            .map_err(http_err)
    }

    /// The current state of a run.
    pub fn status(&self, run: &str, ctl: &Control) -> Result<fedp2eft_wire::RunStatus> {
        let c = &self.inner;
        let url = c.url(&routes::run(run));
        c.send(ctl, || c.http.get(&url))?.json().map_err(http_err)
    }

    /// Downloads φ_round of `run` (e.g. the final PSG).
    pub fn psg(
        &self,
        run: &str,
        round: u32,
        layout: &PsgLayout,
        ctl: &Control,
    ) -> Result<crate::psg::Psg> {
        from_params(
            layout,
            PsgConfig::default(),
            &self.params(run, round, layout, ctl)?,
        )
    }

    /// Downloads the global parameters of round `round` of `run`, whatever net it federates.
    pub fn params(
        &self,
        run: &str,
        round: u32,
        layout: &PsgLayout,
        ctl: &Control,
    ) -> Result<PsgParams> {
        self.inner.download(&routes::psg(run, round), layout, ctl)
    }
}
