//! A round: its status, and the upload of a client's update into it.
use axum::extract::State;
use axum::Json;
use fedp2eft_wire::{ErrorCode, RoundState as WireRoundState, RoundStatus, UploadAccepted};

use super::extract::{ApiPath, Payload};
use crate::auth::{RunCaller, RunClient};
use crate::coordinator::{accept_update, run_config};
use crate::error::ApiError;
use crate::state::now_ms;
use crate::store::RoundState;
use crate::AppState;

/// `GET /v1/runs/{run}/rounds/{round}` (admin or a client of the run).
pub async fn status(
    State(state): State<AppState>,
    RunCaller { run, .. }: RunCaller,
    ApiPath((_, k)): ApiPath<(String, u32)>,
) -> Result<Json<RoundStatus>, ApiError> {
    let round = state.store.round(&run.id, k).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "round {k} has not opened (the run is at round {})",
                run.current_round
            ),
        )
    })?;
    let config = run_config(&run)?;
    let digest = |v: u32| state.store.psg_digest(&run.id, v);
    let psg_sha256 = digest(k)
        .await?
        .ok_or_else(|| ApiError::internal(format!("run {} lacks phi_{k}", run.id)))?;
    let (wire_state, aggregate_sha256) = match round.state {
        RoundState::Open => (WireRoundState::Open, None),
        // Closing is a closed round whose phi_{k+1} is being computed.
        RoundState::Closing => (WireRoundState::Closed, None),
        RoundState::Aggregated => (WireRoundState::Closed, digest(k + 1).await?),
        RoundState::Failed => (WireRoundState::Failed, None),
    };
    let closes_in_s = (round.state == RoundState::Open)
        .then(|| u64::try_from(round.deadline_at - now_ms()).unwrap_or(0) / 1000);
    Ok(Json(RoundStatus {
        run: run.id,
        round: k,
        state: wire_state,
        selected: u64::from(round.selected),
        reported: u64::from(round.reported),
        quorum: config.quorum(round.selected as usize) as u64,
        closes_in_s,
        psg_sha256,
        aggregate_sha256,
    }))
}

/// `POST /v1/runs/{run}/rounds/{round}/update` (client): an `UpdateMeta` payload.
pub async fn upload(
    State(state): State<AppState>,
    client: Result<RunClient, ApiError>,
    ApiPath((_, k)): ApiPath<(String, u32)>,
    body: Result<Payload, ApiError>,
) -> Result<Json<UploadAccepted>, ApiError> {
    // Extraction errors are taken as values so that every refused upload is counted.
    let result = async {
        let RunClient { run, client } = client?;
        let Payload(body) = body?;
        accept_update(&state, &run, &client, k, body, now_ms()).await
    }
    .await;
    match &result {
        Ok(accepted) => state.metrics.upload_accepted(accepted.duplicate),
        Err(e) => state.metrics.upload_rejected(e.code()),
    }
    result.map(Json)
}
