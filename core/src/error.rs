//! The one error type of the core crate: structured variants a caller can match on.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A weights, config, tokenizer or PSG file that cannot be parsed.
    #[error("malformed {kind} file {path}: {reason}")]
    Format {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// Files that parse but do not fit together (config vs weights, PSG vs model).
    #[error("mismatch: {0}")]
    Mismatch(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid budget r={budget}: must be in 1..={r_max}")]
    Budget { budget: usize, r_max: usize },
    #[error("empty data set: {0}")]
    EmptyData(String),
    #[error("label {label} outside the classification head of {num_labels} labels")]
    Label { label: usize, num_labels: usize },
    #[error("loss became {value} at step {step} ({phase}); training stopped")]
    NonFiniteLoss {
        phase: String,
        step: usize,
        value: f32,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A method name that does not exist, or a method without the input it needs.
    #[error("method: {0}")]
    Method(String),
    #[error("data: {0}")]
    Data(String),
    /// The federation server refused a request or could not be reached (after retries).
    #[error("server: {code}{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Server {
        status: Option<u16>,
        code: String,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn format(kind: &'static str, path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            kind,
            path: path.into(),
            reason: reason.into(),
        }
    }
}
