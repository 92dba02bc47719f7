//! `ApiError`: the one error every handler returns. Its body is wire's `ErrorBody` and its
//! status the code's agreed HTTP status, so clients can rely on both. Server-side failures
//! are logged in full here and answered with a generic message: internals never leak.
use axum::http::header::{HeaderValue, WWW_AUTHENTICATE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fedp2eft_wire::{ErrorBody, ErrorCode};

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or invalid bearer token")
    }

    pub fn unknown_run(run: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no run `{run}`"))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// Logs `detail` and answers 500 without it.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(ErrorCode::Internal, "internal server error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Validation errors describe the peer's own payload, so their text is safe to return; the
/// few wire errors that can only come from the server's own state are internal.
impl From<fedp2eft_wire::Error> for ApiError {
    fn from(e: fedp2eft_wire::Error) -> Self {
        match e.code() {
            ErrorCode::Internal => ApiError::internal(e),
            _ => {
                let body = ErrorBody::from(&e);
                ApiError::new(body.error.code, body.error.message)
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists => ApiError::new(ErrorCode::AlreadyExists, "already exists"),
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if self.code == ErrorCode::Unauthorized {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_gets_its_status_and_body() -> anyhow::Result<()> {
        for code in ErrorCode::ALL {
            let response = ApiError::new(code, "m").into_response();
            assert_eq!(response.status().as_u16(), code.http_status());
        }
        Ok(())
    }

    #[test]
    fn internals_do_not_leak() {
        let e = ApiError::from(StoreError::Corrupt("secret path /var/db".into()));
        assert_eq!(e.code(), ErrorCode::Internal);
        assert!(!e.message().contains("/var/db"));
        let nan = fedp2eft_wire::Error::NonFinite {
            name: "fc1.bias".into(),
            index: 2,
            value: f32::NAN,
        };
        let e = ApiError::from(nan);
        assert_eq!(e.code(), ErrorCode::InvalidUpdate);
        assert!(e.message().contains("fc1.bias"));
    }
}
