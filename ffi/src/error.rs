//! Every failure that crosses the boundary: one enum, converted from the core's errors here and
//! nowhere else. Kotlin and Swift see a sealed class / enum, Python an exception hierarchy.
//! The text field is `detail`, not `message`: in Kotlin a `message` field clashes with
//! `Throwable.message` and the binding does not compile (uniffi-rs #1434, open in 0.32).
use fedp2eft_core::Error;

#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum FedError {
    /// The budget r is outside 1..=r_max.
    #[error("invalid budget r={budget}: must be in 1..={r_max}")]
    InvalidBudget { budget: u32, r_max: u32 },
    /// A model, tokenizer or PSG file is missing, unreadable or malformed, or files do not fit
    /// together.
    #[error("model: {detail}")]
    Model { detail: String },
    /// The examples cannot be used (empty split, label outside the head, NaN).
    #[error("data: {detail}")]
    Data { detail: String },
    /// An option the library does not know, or cannot serve with what it holds (a method
    /// name, a method without its input).
    #[error("invalid option: {detail}")]
    InvalidOption { detail: String },
    /// `cancel()` was called.
    #[error("cancelled")]
    Cancelled,
    /// The federation server refused a request or could not be reached.
    #[error("server: {detail}")]
    Server {
        /// The HTTP status, none when the server could not be reached.
        status: Option<u16>,
        /// The wire error code (`unauthorized`, `conflict`, ...; `transport` when unreachable).
        code: String,
        detail: String,
    },
    /// Anything else (a bug on our side): the message says what.
    #[error("internal: {detail}")]
    Internal { detail: String },
}

impl From<Error> for FedError {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        match e {
            Error::Budget { budget, r_max } => FedError::InvalidBudget {
                budget: budget as u32,
                r_max: r_max as u32,
            },
            Error::Cancelled => FedError::Cancelled,
            Error::Io { .. } | Error::Format { .. } | Error::Mismatch(_) | Error::Tokenizer(_) => {
                FedError::Model { detail }
            }
            Error::EmptyData(_)
            | Error::Label { .. }
            | Error::Data(_)
            | Error::NonFiniteLoss { .. } => FedError::Data { detail },
            Error::Server {
                status,
                code,
                message,
            } => FedError::Server {
                status,
                code,
                detail: message,
            },
            Error::Method(_) => FedError::InvalidOption { detail },
            Error::Candle(_) | Error::Config(_) => FedError::Internal { detail },
        }
    }
}
