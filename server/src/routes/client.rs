//! A client's side of a run: what to do next, and the PSG to do it with.
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, ETAG, RETRY_AFTER};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fedp2eft_wire::routes::{self, PAYLOAD_CONTENT_TYPE};
use fedp2eft_wire::{ErrorCode, PsgRef, Task, TrainTask};

use super::extract::ApiPath;
use crate::auth::{RunCaller, RunClient};
use crate::coordinator::current_round;
use crate::error::ApiError;
use crate::state::now_ms;
use crate::store::{Pool, RoundState, RunState};
use crate::AppState;

/// `GET /v1/runs/{run}/task` (client).
pub async fn task(
    State(state): State<AppState>,
    RunClient { run, client }: RunClient,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let psg_ref = |round: u32, digest: String| PsgRef {
        round,
        psg: routes::psg(&run.id, round),
        psg_sha256: digest,
    };
    if run.state == RunState::Finished {
        let digest = psg_digest(&state, &run.id, run.current_round).await?;
        return Ok(Json(Task::Finished(psg_ref(run.current_round, digest))).into_response());
    }
    let wait = || {
        let retry = state.config.retry_after_s;
        let mut response = Json(Task::Wait {
            retry_after_s: retry,
        })
        .into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry));
        Ok(response)
    };
    // Unseen-pool clients never train: they wait for the final PSG.
    if client.pool == Pool::Unseen {
        return wait();
    }
    let Some(round) = current_round(&state, &run, now).await? else {
        return wait();
    };
    let k = round.round;
    if round.state != RoundState::Open
        || round.deadline_at <= now
        || !state.store.is_selected(&run.id, k, &client.id).await?
        || state
            .store
            .update_digest(&run.id, k, &client.id)
            .await?
            .is_some()
    {
        return wait();
    }
    let digest = psg_digest(&state, &run.id, k).await?;
    let closes_in_ms = u64::try_from(round.deadline_at - now).unwrap_or(0);
    Ok(Json(Task::Train(TrainTask {
        psg: psg_ref(k, digest),
        upload: routes::update(&run.id, k),
        closes_in_s: closes_in_ms / 1000,
    }))
    .into_response())
}

async fn psg_digest(state: &AppState, run: &str, round: u32) -> Result<String, ApiError> {
    state
        .store
        .psg_digest(run, round)
        .await?
        .ok_or_else(|| ApiError::internal(format!("run {run} lacks phi_{round}")))
}

/// `GET /v1/runs/{run}/psg/{round}` (a client of the run, or the admin): phi_round as served,
/// with its SHA-256 as the ETag.
pub async fn psg(
    State(state): State<AppState>,
    caller: RunCaller,
    ApiPath((_, round)): ApiPath<(String, u32)>,
) -> Result<Response, ApiError> {
    let psg = state
        .store
        .psg(&caller.run.id, round)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no PSG for round {round} (the run is at round {})",
                    caller.run.current_round
                ),
            )
        })?;
    let mut response = psg.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PAYLOAD_CONTENT_TYPE));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", psg.digest)) {
        headers.insert(ETAG, etag);
    }
    Ok(response)
}
