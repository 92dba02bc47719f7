//! Applies `round`'s rules to the store: opens rounds, stores uploads, closes rounds and
//! aggregates. Every function reads what it needs from the store and changes it through one
//! atomic `Store` call, so any of them may run concurrently, or again after a crash.
use axum::body::Bytes;
use fedp2eft_wire::{
    sha256_hex, CreateRun, ErrorCode, FedAvgAccumulator, Limits, PsgParams, PsgSpec, RoundMeta,
    UpdateMeta, UploadAccepted,
};

use crate::error::ApiError;
use crate::round;
use crate::store::{
    ClientRecord, NewPsg, NewRound, NewUpdate, PutOutcome, RoundClose, RoundOutcome, RoundRecord,
    RoundState, RunRecord, RunState, UpdateSummary,
};
use crate::AppState;

/// The run's configuration, stored as `CreateRun` JSON.
pub fn run_config(run: &RunRecord) -> Result<CreateRun, ApiError> {
    serde_json::from_str(&run.config)
        .map_err(|e| ApiError::internal(format!("run {} has unreadable config: {e}", run.id)))
}

pub fn run_spec(config: &CreateRun) -> Result<PsgSpec, ApiError> {
    config.layout.spec().map_err(ApiError::internal)
}

/// Runs CPU-heavy payload work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task failed: {e}")))?
}

/// phi_k encoded as served: the round's PSG with `RoundMeta` (run, k, layout).
pub async fn encode_psg(
    run_id: &str,
    round: u32,
    config: &CreateRun,
    params: PsgParams,
    now_ms: i64,
) -> Result<NewPsg, ApiError> {
    let meta = RoundMeta::new(run_id, round, config.layout.clone());
    let bytes = blocking(move || Ok(params.encode(&meta)?)).await?;
    Ok(NewPsg {
        version: round,
        digest: sha256_hex(&bytes),
        bytes,
        created_at: now_ms,
    })
}

/// The run's current round, opening it first if nobody has. Round 0 opens here, at the first
/// task poll, so the clients enrolled by then form the pool it samples from; later rounds are
/// opened by the previous round's close. None while the run has no seen-pool client, or when
/// it is finished.
pub async fn current_round(
    state: &AppState,
    run: &RunRecord,
    now_ms: i64,
) -> Result<Option<RoundRecord>, ApiError> {
    if run.state == RunState::Finished {
        return Ok(None);
    }
    let k = run.current_round;
    if let Some(round) = state.store.round(&run.id, k).await? {
        return Ok(Some(round));
    }
    let config = run_config(run)?;
    let seen = state.store.seen_clients(&run.id).await?;
    let count = config.clients_per_round(seen.len());
    if count == 0 {
        return Ok(None);
    }
    let new = NewRound {
        round: k,
        opened_at: now_ms,
        deadline_at: round::deadline(now_ms, config.deadline_s),
        selected: round::select_clients(run.seed, k, &seen, count),
    };
    // False when another request opened it first: then read theirs.
    if state.store.open_round(&run.id, &new).await? {
        tracing::info!(run = %run.id, round = k, selected = new.selected.len(), "round opened");
    }
    Ok(state.store.round(&run.id, k).await?)
}

/// Validates and stores a client's update for round `k`; closes the round if it was the last
/// one missing. The update is durable before this returns Ok.
pub async fn accept_update(
    state: &AppState,
    run: &RunRecord,
    client: &ClientRecord,
    k: u32,
    body: Bytes,
    now_ms: i64,
) -> Result<UploadAccepted, ApiError> {
    let config = run_config(run)?;
    let spec = run_spec(&config)?;
    let limits = Limits::for_spec(&spec);
    let payload = body.clone();
    let (_, meta) =
        blocking(move || Ok(PsgParams::decode::<UpdateMeta>(&payload, &spec, &limits)?)).await?;
    meta.check_matches(&run.id, k, &client.id)?;
    let digest = sha256_hex(&body);
    let outcome = state
        .store
        .put_update(&NewUpdate {
            run_id: run.id.clone(),
            round: k,
            client_id: client.id.clone(),
            num_samples: meta.num_samples,
            digest: digest.clone(),
            bytes: body.to_vec(),
            received_at: now_ms,
        })
        .await?;
    let duplicate = match outcome {
        PutOutcome::Stored => false,
        PutOutcome::Duplicate => true,
        PutOutcome::Conflict => {
            return Err(ApiError::new(
                ErrorCode::AlreadyReported,
                format!(
                    "client `{}` already reported a different update in round {k}",
                    client.id
                ),
            ))
        }
        PutOutcome::NoSuchRound => {
            return Err(ApiError::new(
                ErrorCode::WrongRound,
                format!(
                    "round {k} is not open; the run is at round {}",
                    run.current_round
                ),
            ))
        }
        PutOutcome::RoundNotOpen => {
            return Err(ApiError::new(
                ErrorCode::RoundClosed,
                format!("round {k} no longer accepts updates"),
            ))
        }
        PutOutcome::NotSelected => {
            return Err(ApiError::new(
                ErrorCode::NotSelected,
                format!("client `{}` is not selected in round {k}", client.id),
            ))
        }
    };
    if !duplicate {
        tracing::info!(run = %run.id, round = k, client = %client.id, samples = meta.num_samples, "update stored");
        // The update is stored whatever happens here; a failed close is retried by the
        // deadline task, so it must not turn this upload's answer into an error. Spawned, so a
        // client hanging up mid-aggregation (which drops this future) cannot interrupt it.
        let (closer, run_id) = (state.clone(), run.id.clone());
        let close = tokio::spawn(async move { close_if_due(&closer, &run_id, k, now_ms).await });
        match close.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(run = %run.id, round = k, error = %e, "closing after upload failed")
            }
            Err(e) => tracing::error!(run = %run.id, round = k, error = %e, "closing task failed"),
        }
    }
    Ok(UploadAccepted {
        run: run.id.clone(),
        round: k,
        client: client.id.clone(),
        sha256: digest,
        duplicate,
    })
}

/// Closes round `k` if every selected client reported or its deadline passed.
pub async fn close_if_due(
    state: &AppState,
    run_id: &str,
    k: u32,
    now_ms: i64,
) -> Result<Option<RoundOutcome>, ApiError> {
    let Some(round) = state.store.round(run_id, k).await? else {
        return Ok(None);
    };
    let Some(reason) = round::close_reason(&round, now_ms) else {
        return Ok(None);
    };
    if !state.store.begin_closing(run_id, k, now_ms, reason).await? {
        return Ok(None); // someone else is closing it
    }
    tracing::info!(run = %run_id, round = k, reason = reason.as_str(), reported = round.reported, selected = round.selected, "round closing");
    finish_round(state, run_id, k, now_ms).await
}

/// Finishes a `closing` round: FedAvg of its updates if they reach the quorum (else phi_k
/// carries over), then phi_{k+1} and round k+1 (or the run's end) in one transaction.
pub async fn finish_round(
    state: &AppState,
    run_id: &str,
    k: u32,
    now_ms: i64,
) -> Result<Option<RoundOutcome>, ApiError> {
    let run = state
        .store
        .run(run_id)
        .await?
        .ok_or_else(|| ApiError::internal(format!("round of missing run {run_id}")))?;
    let config = run_config(&run)?;
    let spec = run_spec(&config)?;
    let round = state
        .store
        .round(run_id, k)
        .await?
        .ok_or_else(|| ApiError::internal(format!("missing round {run_id}/{k}")))?;
    if round.state != RoundState::Closing {
        return Ok(None);
    }
    let updates = state.store.updates(run_id, k).await?;
    let reported = u32::try_from(updates.len()).unwrap_or(u32::MAX);
    let outcome = round::outcome(reported, config.quorum(round.selected as usize));
    let next_params = match outcome {
        RoundOutcome::Aggregated => aggregate(state, run_id, k, &updates, &spec).await?,
        RoundOutcome::Failed => current_params(state, run_id, k, &spec).await?,
    };
    let next = k + 1;
    let next_psg = encode_psg(run_id, next, &config, next_params, now_ms).await?;
    let next_round = if next < config.rounds {
        let seen = state.store.seen_clients(run_id).await?;
        let count = config.clients_per_round(seen.len());
        Some(NewRound {
            round: next,
            opened_at: now_ms,
            deadline_at: round::deadline(now_ms, config.deadline_s),
            selected: round::select_clients(run.seed, next, &seen, count),
        })
    } else {
        None
    };
    let digest = next_psg.digest.clone();
    let closed = state
        .store
        .finish_round(&RoundClose {
            run_id: run_id.to_string(),
            round: k,
            outcome,
            closed_at: now_ms,
            next_psg,
            next_round,
        })
        .await?;
    if !closed {
        return Ok(None);
    }
    state.metrics.round_closed(outcome);
    tracing::info!(
        run = %run_id, round = k, outcome = ?outcome, updates = reported,
        next_psg_sha256 = %digest, finished = next >= config.rounds, "round closed"
    );
    Ok(Some(outcome))
}

/// FedAvg (wire's) of the round's stored updates, streamed one update at a time so a round's
/// updates never need to fit in memory together.
async fn aggregate(
    state: &AppState,
    run_id: &str,
    k: u32,
    updates: &[UpdateSummary],
    spec: &PsgSpec,
) -> Result<PsgParams, ApiError> {
    let limits = Limits::for_spec(spec);
    let mut acc = FedAvgAccumulator::with_spec(spec.clone());
    for update in updates {
        let bytes = state
            .store
            .update_bytes(run_id, k, &update.client_id)
            .await?
            .ok_or_else(|| ApiError::internal("stored update vanished"))?;
        let spec = spec.clone();
        let n = update.num_samples;
        acc = blocking(move || {
            let (params, _) = PsgParams::decode::<UpdateMeta>(&bytes, &spec, &limits)?;
            acc.add(&params, n)?;
            Ok(acc)
        })
        .await?;
    }
    blocking(move || Ok(acc.finish()?)).await
}

/// The parameters of phi_k, as stored.
async fn current_params(
    state: &AppState,
    run_id: &str,
    k: u32,
    spec: &PsgSpec,
) -> Result<PsgParams, ApiError> {
    let psg = state
        .store
        .psg(run_id, k)
        .await?
        .ok_or_else(|| ApiError::internal(format!("missing phi_{k} of {run_id}")))?;
    let spec = spec.clone();
    blocking(move || {
        let (params, _) =
            PsgParams::decode::<RoundMeta>(&psg.bytes, &spec, &Limits::for_spec(&spec))?;
        Ok(params)
    })
    .await
}

/// One pass of the deadline task: closes open rounds past their deadline and finishes rounds
/// left `closing` by a closer that died (all of them when `resume_closing`, i.e. at start,
/// when no other closer can exist; otherwise those older than the closing lease). Errors are
/// logged per round so one bad round does not stall the others.
pub async fn sweep(state: &AppState, now_ms: i64, resume_closing: bool) {
    let rounds = match state.store.unfinished_rounds().await {
        Ok(rounds) => rounds,
        Err(e) => {
            tracing::error!(error = %e, "deadline sweep could not list rounds");
            return;
        }
    };
    let lease = i64::try_from(state.config.closing_lease.as_millis()).unwrap_or(i64::MAX);
    for round in rounds {
        let result = match round.state {
            RoundState::Open if round::close_reason(&round, now_ms).is_some() => {
                close_if_due(state, &round.run_id, round.round, now_ms).await
            }
            RoundState::Closing
                if resume_closing
                    || round
                        .closing_at
                        .is_none_or(|t| now_ms.saturating_sub(t) >= lease) =>
            {
                tracing::warn!(run = %round.run_id, round = round.round, "finishing an interrupted close");
                finish_round(state, &round.run_id, round.round, now_ms).await
            }
            _ => Ok(None),
        };
        if let Err(e) = result {
            tracing::error!(run = %round.run_id, round = round.round, error = %e, "deadline sweep");
        }
    }
}
