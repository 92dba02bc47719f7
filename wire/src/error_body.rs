//! The one error body every non-2xx answer carries:
//! `{ "error": { "code": "not_selected", "message": "..." } }`.
//! Each code maps to exactly one HTTP status, defined here so client and server agree.
use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, a field out of range, an invalid id.
    BadRequest,
    /// The payload's protocol version is not the server's.
    UnsupportedProtocol,
    /// Missing or wrong bearer token (admin or client).
    Unauthorized,
    /// Unknown run, client, round or PSG.
    NotFound,
    /// The client is not among the round's selected clients.
    NotSelected,
    /// The update is for another round than the open one.
    WrongRound,
    /// The round (or the run) no longer accepts updates.
    RoundClosed,
    /// A run name or client id that is already taken.
    AlreadyExists,
    /// The client already reported this round with a different update.
    AlreadyReported,
    /// Body larger than the limits.
    TooLarge,
    /// A payload that fails validation: names, shapes, dtype, NaN/Inf, metadata.
    InvalidUpdate,
    /// The server's fault; the message never carries internals.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadRequest,
        ErrorCode::UnsupportedProtocol,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::NotSelected,
        ErrorCode::WrongRound,
        ErrorCode::RoundClosed,
        ErrorCode::AlreadyExists,
        ErrorCode::AlreadyReported,
        ErrorCode::TooLarge,
        ErrorCode::InvalidUpdate,
        ErrorCode::Internal,
    ];

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnsupportedProtocol => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::NotSelected
            | ErrorCode::WrongRound
            | ErrorCode::RoundClosed
            | ErrorCode::AlreadyExists
            | ErrorCode::AlreadyReported => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::InvalidUpdate => 422,
            ErrorCode::Internal => 500,
        }
    }

    /// The snake_case string used in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedProtocol => "unsupported_protocol",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotSelected => "not_selected",
            ErrorCode::WrongRound => "wrong_round",
            ErrorCode::RoundClosed => "round_closed",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::AlreadyReported => "already_reported",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidUpdate => "invalid_update",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{ "error": { "code", "message" } }`. Not `deny_unknown_fields`: a server may add fields
/// to error bodies within a protocol version, and an old client must still read the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }

    pub fn http_status(&self) -> u16 {
        self.error.code.http_status()
    }
}

/// Validation errors describe the peer's own payload, so their text is safe to send back.
impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        ErrorBody::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_map_to_the_agreed_statuses() -> anyhow::Result<()> {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code)?;
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json)?, code);
        }
        let status = |c: ErrorCode| c.http_status();
        assert_eq!(status(ErrorCode::Unauthorized), 401);
        assert_eq!(status(ErrorCode::NotSelected), 409);
        assert_eq!(status(ErrorCode::WrongRound), 409);
        assert_eq!(status(ErrorCode::RoundClosed), 409);
        assert_eq!(status(ErrorCode::InvalidUpdate), 422);
        assert_eq!(status(ErrorCode::TooLarge), 413);
        assert_eq!(status(ErrorCode::NotFound), 404);
        assert_eq!(status(ErrorCode::BadRequest), 400);
        Ok(())
    }

    #[test]
    fn body_has_the_stable_shape() -> anyhow::Result<()> {
        let body = ErrorBody::new(
            ErrorCode::NotSelected,
            "client c1 is not selected in round 3",
        );
        let v: serde_json::Value = serde_json::to_value(&body)?;
        assert_eq!(v["error"]["code"], "not_selected");
        assert_eq!(
            v["error"]["message"],
            "client c1 is not selected in round 3"
        );
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
        // A newer server's extra field does not break an old client.
        let newer = r#"{"error":{"code":"wrong_round","message":"m","open_round":4}}"#;
        assert_eq!(
            serde_json::from_str::<ErrorBody>(newer)?.error.code,
            ErrorCode::WrongRound
        );
        Ok(())
    }

    #[test]
    fn validation_errors_map_to_their_codes() {
        let nan = Error::NonFinite {
            name: "fc1.bias".into(),
            index: 3,
            value: f32::NAN,
        };
        let body = ErrorBody::from(&nan);
        assert_eq!(body.http_status(), 422);
        assert!(
            body.error.message.contains("fc1.bias"),
            "{}",
            body.error.message
        );
        assert_eq!(Error::TooLarge { len: 9, max: 8 }.code().http_status(), 413);
        let proto = Error::WrongProtocol {
            found: 2,
            expected: 1,
        };
        assert_eq!(proto.code(), ErrorCode::UnsupportedProtocol);
        assert_eq!(Error::field("fraction", "x").code().http_status(), 400);
    }
}
