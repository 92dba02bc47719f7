//! Body extractors whose rejections are `ApiError`s, so a malformed or oversized body gets the
//! same JSON error shape as everything else (axum's own rejections answer plain text).
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use fedp2eft_wire::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A safetensors payload (`application/octet-stream`), at most the configured body limit.
#[derive(Debug, Clone)]
pub struct Payload(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Payload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Payload)
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorCode::TooLarge,
                        "request body exceeds the server's limit",
                    )
                } else {
                    ApiError::bad_request(e.body_text())
                }
            })
    }
}

/// A JSON control message; typos and missing fields are 400 with serde's explanation.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| JsonBody(v))
            .map_err(|e: JsonRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorCode::TooLarge,
                        "request body exceeds the server's limit",
                    )
                } else {
                    ApiError::bad_request(e.body_text())
                }
            })
    }
}

/// Path parameters; a segment that does not parse (a round that is not a number) is 400.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}
