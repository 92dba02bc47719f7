//! Closing a round — exactly once, however many server processes share the database.
//!
//! Who closes: whoever holds the round's lock (`Store::lock_round`: a PostgreSQL advisory
//! lock, or an in-process one for SQLite). Under it, the closer moves the round `open ->
//! closing` (a compare-and-set, which also stops uploads), aggregates, and commits phi_{k+1}
//! with the round's outcome and the next round (`closing -> aggregated | failed`, again a
//! compare-and-set). The lock is what makes the closer the only aggregator: without it, a
//! second process that found the round `closing` could not tell a live closer from a dead one
//! and would have to wait out a lease — or aggregate in parallel. With it, `closing` plus a
//! free lock means the closer died (PostgreSQL drops a dead session's locks), so the next
//! holder finishes the round at once. The compare-and-sets keep every state change single
//! even if a lock were ever lost (e.g. the lock's connection broke mid-aggregation).
use fedp2eft_wire::{FedAvgAccumulator, Limits, PsgParams, PsgSpec, RoundMeta, UpdateMeta};

use crate::coordinator::{blocking, encode_psg, run_config, run_spec};
use crate::error::ApiError;
use crate::round;
use crate::store::{NewRound, RoundClose, RoundOutcome, RoundRecord, RoundState, UpdateSummary};
use crate::AppState;

/// Closes round `k` if it is due (every selected client reported, or its deadline passed), or
/// finishes it if it is `closing` and nobody is at it. None when there was nothing to do or
/// another closer holds the round.
pub async fn close_if_due(
    state: &AppState,
    run_id: &str,
    k: u32,
    now_ms: i64,
) -> Result<Option<RoundOutcome>, ApiError> {
    // Unlocked look first: nearly every call (each upload but the last, each deadline check)
    // finds nothing to do, and should not take a lock (a connection, on PostgreSQL) for that.
    let Some(round) = state.store.round(run_id, k).await? else {
        return Ok(None);
    };
    if !needs_closer(&round, now_ms) {
        return Ok(None);
    }
    let Some(lock) = state.store.lock_round(run_id, k).await? else {
        tracing::debug!(run = %run_id, round = k, "another closer holds the round");
        return Ok(None);
    };
    let result = close_locked(state, run_id, k, now_ms).await;
    lock.release().await;
    result
}

fn needs_closer(round: &RoundRecord, now_ms: i64) -> bool {
    round.state == RoundState::Closing || round::close_reason(round, now_ms).is_some()
}

/// `close_if_due` under the round's lock.
async fn close_locked(
    state: &AppState,
    run_id: &str,
    k: u32,
    now_ms: i64,
) -> Result<Option<RoundOutcome>, ApiError> {
    // Read again: the previous holder may have finished the round since the unlocked look.
    let Some(round) = state.store.round(run_id, k).await? else {
        return Ok(None);
    };
    match round.state {
        RoundState::Open => {
            let Some(reason) = round::close_reason(&round, now_ms) else {
                return Ok(None);
            };
            if !state.store.begin_closing(run_id, k, now_ms, reason).await? {
                return Ok(None);
            }
            tracing::info!(run = %run_id, round = k, reason = reason.as_str(), reported = round.reported, selected = round.selected, "round closing");
        }
        RoundState::Closing => {
            tracing::warn!(run = %run_id, round = k, "finishing a close whose closer stopped");
        }
        RoundState::Aggregated | RoundState::Failed => return Ok(None),
    }
    state.metrics.round_close_started();
    finish_round(state, run_id, k, now_ms).await
}

/// Finishes a `closing` round: FedAvg of its updates if they reach the quorum (else phi_k
/// carries over), then phi_{k+1} and round k+1 (or the run's end) in one transaction.
async fn finish_round(
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
/// that a closer left `closing` (it died, or its transaction failed). Runs in every process:
/// the round locks let exactly one of them act on each round. Errors are logged per round so
/// one bad round does not stall the others.
pub async fn sweep(state: &AppState, now_ms: i64) {
    let rounds = match state.store.unfinished_rounds().await {
        Ok(rounds) => rounds,
        Err(e) => {
            tracing::error!(error = %e, "deadline sweep could not list rounds");
            return;
        }
    };
    for round in rounds {
        if !needs_closer(&round, now_ms) {
            continue;
        }
        if let Err(e) = close_if_due(state, &round.run_id, round.round, now_ms).await {
            tracing::error!(run = %round.run_id, round = round.round, error = %e, "deadline sweep");
        }
    }
}
