//! The one error type of the wire crate. Every way a payload or message can be invalid is its
//! own variant, so the server can answer precisely and tests can match on the cause.
use crate::ErrorCode;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The whole body is larger than `Limits::max_bytes`.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The safetensors header length prefix exceeds `Limits::max_header_bytes`.
    #[error("safetensors header of {len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge { len: u64, max: usize },
    /// The bytes end before (or run past) what the header declares.
    #[error("truncated payload: {0}")]
    Truncated(String),
    /// Not a safetensors byte string at all (bad header JSON, bad offsets, ...).
    #[error("not a safetensors payload: {0}")]
    NotSafetensors(String),
    #[error("protocol version {found} is not supported (this side speaks {expected})")]
    WrongProtocol { found: u32, expected: u32 },
    /// A required `__metadata__` key or metadata field is absent.
    #[error("metadata `{0}` missing")]
    MetadataMissing(String),
    /// Metadata is present but does not parse or is inconsistent.
    #[error("invalid metadata: {0}")]
    MetadataInvalid(String),
    #[error("tensor `{0}` missing")]
    MissingTensor(String),
    #[error("unexpected tensor `{0}`")]
    UnexpectedTensor(String),
    /// One expected name is absent and an unexpected one is present in its place.
    #[error("tensor `{expected}` missing, found `{found}` instead (renamed?)")]
    RenamedTensor { expected: String, found: String },
    #[error("tensor `{name}` appears twice")]
    DuplicateTensor { name: String },
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}`: expected dtype F32, found {found}")]
    WrongDtype { name: String, found: String },
    /// NaN or ±Inf at flat (row-major) index `index` of tensor `name`.
    #[error("tensor `{name}` holds {value} at flat index {index}")]
    NonFinite {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("num_samples {value} outside 1..={max}")]
    NumSamples { value: u64, max: u64 },
    /// Payload metadata names another run, round or client than the request it came with.
    #[error("metadata {field} is `{found}`, expected `{expected}`")]
    MetaMismatch {
        field: &'static str,
        expected: String,
        found: String,
    },
    /// A PSG layout or spec that cannot describe a PSG (zero sizes, overflow, duplicates).
    #[error("invalid PSG spec: {0}")]
    InvalidSpec(String),
    /// A run configuration or request field out of range.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("FedAvg of no updates")]
    EmptyAggregate,
    #[error("FedAvg over {count} updates with a total of 0 samples")]
    ZeroTotalSamples { count: usize },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The API error code (and so HTTP status) this error is answered with when it comes from
    /// a peer's request. Server and client share it so both agree on what a status means.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::TooLarge { .. } | Error::HeaderTooLarge { .. } => ErrorCode::TooLarge,
            Error::WrongProtocol { .. } => ErrorCode::UnsupportedProtocol,
            Error::InvalidField { .. } => ErrorCode::BadRequest,
            // Aggregation errors only arise from the server's own state.
            Error::EmptyAggregate | Error::ZeroTotalSamples { .. } => ErrorCode::Internal,
            Error::Truncated(_)
            | Error::NotSafetensors(_)
            | Error::MetadataMissing(_)
            | Error::MetadataInvalid(_)
            | Error::MissingTensor(_)
            | Error::UnexpectedTensor(_)
            | Error::RenamedTensor { .. }
            | Error::DuplicateTensor { .. }
            | Error::WrongShape { .. }
            | Error::WrongDtype { .. }
            | Error::NonFinite { .. }
            | Error::NumSamples { .. }
            | Error::MetaMismatch { .. }
            | Error::InvalidSpec(_) => ErrorCode::InvalidUpdate,
        }
    }

    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}
