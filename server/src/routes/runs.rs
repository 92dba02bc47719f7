//! Admin side of a run: create it (with phi_0), enrol clients; and its status.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use fedp2eft_wire::{
    CreateRun, Enroll, Enrolled, ErrorCode, Limits, Pool as WirePool, RunCreated,
    RunState as WireRunState, RunStatus,
};

use super::extract::{ApiPath, JsonBody, Payload};
use crate::auth::{hash_token, new_client_token, Admin, RunCaller};
use crate::coordinator::{encode_psg, run_config};
use crate::error::ApiError;
use crate::state::now_ms;
use crate::store::{ClientRecord, Pool, RunRecord, RunState, StoreError};
use crate::AppState;

/// `POST /v1/runs` (admin): body is a `CreateRun` payload carrying phi_0.
pub async fn create_run(
    _: Admin,
    State(state): State<AppState>,
    Payload(body): Payload,
) -> Result<(StatusCode, Json<RunCreated>), ApiError> {
    let limits = Limits {
        max_bytes: state.config.max_body_bytes,
        ..Limits::default()
    };
    let (params, config) = tokio::task::spawn_blocking(move || CreateRun::decode(&body, &limits))
        .await
        .map_err(ApiError::internal)??;
    let now = now_ms();
    let config_json = serde_json::to_string(&config).map_err(ApiError::internal)?;
    // Served with round metadata (run, round 0, layout), like every later phi_k.
    let psg = encode_psg(&config.name, 0, &config, params, now).await?;
    let run = RunRecord {
        id: config.name.clone(),
        config: config_json,
        seed: config.seed,
        state: RunState::Running,
        current_round: 0,
        created_at: now,
    };
    match state.store.create_run(&run, &psg).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("a run named `{}` exists", run.id),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(run = %run.id, rounds = config.rounds, fraction = config.fraction, "run created");
    Ok((
        StatusCode::CREATED,
        Json(RunCreated {
            run: run.id,
            psg_sha256: psg.digest,
        }),
    ))
}

/// `POST /v1/runs/{run}/clients` (admin): JSON `Enroll` -> `Enrolled` with the token, once.
pub async fn enroll(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    JsonBody(request): JsonBody<Enroll>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    request.validate()?;
    let run = state
        .store
        .run(&run_id)
        .await?
        .ok_or_else(|| ApiError::unknown_run(&run_id))?;
    let token = new_client_token(&request.client);
    let client = ClientRecord {
        run_id: run.id.clone(),
        id: request.client.clone(),
        pool: match request.pool {
            WirePool::Seen => Pool::Seen,
            WirePool::Unseen => Pool::Unseen,
        },
        token_hash: hash_token(&token),
        enrolled_at: now_ms(),
    };
    match state.store.enroll(&client).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("client `{}` is already enrolled in `{}`", client.id, run.id),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(run = %run.id, client = %client.id, pool = client.pool.as_str(), "client enrolled");
    Ok((
        StatusCode::CREATED,
        Json(Enrolled {
            run: run.id,
            client: request.client,
            pool: request.pool,
            token,
        }),
    ))
}

/// `GET /v1/runs/{run}` (admin or a client of the run).
pub async fn status(
    State(state): State<AppState>,
    RunCaller { run, .. }: RunCaller,
) -> Result<Json<RunStatus>, ApiError> {
    let config = run_config(&run)?;
    let (enrolled_seen, enrolled_unseen) = state.store.pool_sizes(&run.id).await?;
    let psg_sha256 = state
        .store
        .psg_digest(&run.id, run.current_round)
        .await?
        .ok_or_else(|| ApiError::internal(format!("run {} lacks its current PSG", run.id)))?;
    Ok(Json(RunStatus {
        run: run.id,
        state: match run.state {
            RunState::Running => WireRunState::Running,
            RunState::Finished => WireRunState::Finished,
        },
        round: run.current_round,
        rounds: config.rounds,
        enrolled_seen,
        enrolled_unseen,
        layout: config.layout,
        psg_sha256,
        stage2: config.stage2,
    }))
}
