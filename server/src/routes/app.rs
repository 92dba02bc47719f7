//! The router: every route, the body limit, request logging.
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fedp2eft_wire::{routes, ErrorCode};

use super::{client, ops, rounds, runs};
use crate::error::ApiError;
use crate::AppState;

/// Every route of the server, with the body limit and request logging.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route(routes::CREATE_RUN, post(runs::create_run))
        .route(routes::RUN, get(runs::status))
        .route(routes::ENROLL, post(runs::enroll))
        .route(routes::TASK, get(client::task))
        .route(routes::PSG, get(client::psg))
        .route(routes::ROUND, get(rounds::status))
        .route(routes::UPDATE, post(rounds::upload))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// One structured log line per request: method, route pattern (never the token), status,
/// latency.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method, %route, status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64, "request"
    );
    response
}
