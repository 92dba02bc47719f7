//! Applies `round`'s rules to the store: opens rounds and stores uploads (closing a round and
//! aggregating it is `close`'s). Every function reads what it needs from the store and changes it through one
//! atomic `Store` call, so any of them may run concurrently, or again after a crash.
use axum::body::Bytes;
use fedp2eft_wire::{
    sha256_hex, CreateRun, ErrorCode, Limits, PsgParams, PsgSpec, RoundMeta, UpdateMeta,
    UploadAccepted,
};

use crate::close::close_if_due;
use crate::error::ApiError;
use crate::round;
use crate::store::{
    ClientRecord, NewPsg, NewRound, NewUpdate, PutOutcome, RoundRecord, RunRecord, RunState,
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
pub(crate) async fn blocking<T: Send + 'static>(
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
