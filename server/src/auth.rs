//! Bearer tokens. The admin token comes from the configuration; a client's token is made at
//! enrolment, shown once, and stored only as its SHA-256. A client token reads
//! `<client id>.<64 hex digits>`: the id half lets the server fetch the one row to compare with
//! (by primary key, no lookup by secret), the random half is the secret.
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::store::{ClientRecord, RunRecord};
use crate::AppState;

/// Random bytes in a client token's secret: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A fresh token for `client`. The secret is hex, so it is everything after the last `.` even
/// when the id itself contains dots.
pub fn new_client_token(client: &str) -> String {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    format!("{client}.{hex}")
}

/// The client id a token claims (before its last `.`).
fn claimed_client(token: &str) -> Option<&str> {
    token
        .rsplit_once('.')
        .map(|(id, _)| id)
        .filter(|id| !id.is_empty())
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn is_admin(state: &AppState, token: &str) -> bool {
    // Hashing both sides first makes the comparison fixed-length.
    constant_time_eq(&hash_token(token), &state.admin_token_hash)
}

/// Proof that the request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts) {
            Some(token) if is_admin(state, token) => Ok(Admin),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// Who is calling a `/v1/runs/{run}/...` route: the run (404 if unknown) and either the admin
/// or one of the run's enrolled clients (401 otherwise).
#[derive(Debug, Clone)]
pub struct RunCaller {
    pub run: RunRecord,
    /// None for the admin.
    pub client: Option<ClientRecord>,
}

impl FromRequestParts<AppState> for RunCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::internal("route without path parameters"))?;
        let run_id = params
            .iter()
            .find(|(k, _)| *k == "run")
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| ApiError::internal("route without {run}"))?;
        let run = state
            .store
            .run(&run_id)
            .await?
            .ok_or_else(|| ApiError::unknown_run(&run_id))?;
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if is_admin(state, token) {
            return Ok(RunCaller { run, client: None });
        }
        let claimed = claimed_client(token).ok_or_else(ApiError::unauthorized)?;
        let client = state.store.client(&run.id, claimed).await?;
        match client {
            Some(c) if constant_time_eq(&hash_token(token), &c.token_hash) => Ok(RunCaller {
                run,
                client: Some(c),
            }),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// A `RunCaller` that must be an enrolled client (the admin is refused: it has no client id).
#[derive(Debug, Clone)]
pub struct RunClient {
    pub run: RunRecord,
    pub client: ClientRecord,
}

impl FromRequestParts<AppState> for RunClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = RunCaller::from_request_parts(parts, state).await?;
        match caller.client {
            Some(client) => Ok(RunClient {
                run: caller.run,
                client,
            }),
            None => Err(ApiError::unauthorized()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_name_their_client() {
        let a = new_client_token("c-1.x");
        let b = new_client_token("c-1.x");
        assert_ne!(a, b);
        assert_eq!(claimed_client(&a), Some("c-1.x"));
        assert_eq!(a.len(), "c-1.x.".len() + 2 * SECRET_BYTES);
        assert_eq!(claimed_client("nodot"), None);
        assert_eq!(claimed_client(".secret"), None);
    }

    #[test]
    fn hashes_compare_in_full() {
        let h = hash_token("abc");
        assert!(constant_time_eq(&h, &hash_token("abc")));
        assert!(!constant_time_eq(&h, &hash_token("abd")));
        let mut last = h;
        last[31] ^= 1;
        assert!(!constant_time_eq(&h, &last));
    }
}
