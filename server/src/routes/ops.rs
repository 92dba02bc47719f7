//! Operational endpoints: liveness, metrics, the API description.
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::metrics::RunGauges;
use crate::store::RunState;
use crate::AppState;

/// `GET /healthz`: 200 when the database answers.
pub async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.store.ping().await?;
    Ok("ok\n")
}

/// `GET /metrics`: Prometheus text format 0.0.4.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut gauges = Vec::new();
    for run in state.store.runs_in_state(RunState::Running).await? {
        let round = state.store.round(&run.id, run.current_round).await?;
        gauges.push(RunGauges { run, round });
    }
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(&gauges),
    ))
}

/// `GET /openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    axum::Json(crate::openapi::document())
}
