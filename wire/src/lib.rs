//! fedp2eft-wire: every message between a federated client and the aggregation server,
//! versioned; PSG parameters as safetensors payloads with validation; FedAvg.
//! No candle, no HTTP: core's client and the server both build on it (docs/protocol.md).
mod codec;
mod digest;
mod enroll;
mod error;
mod error_body;
mod fedavg;
mod ids;
mod limits;
mod meta;
mod params;
mod round;
pub mod routes;
mod run;
mod spec;
mod task;
mod version;

pub use codec::META_KEY;
pub use digest::sha256_hex;
pub use enroll::{Enroll, Enrolled, Pool};
pub use error::{Error, Result};
pub use error_body::{ErrorBody, ErrorCode, ErrorDetail};
pub use fedavg::{fedavg, FedAvgAccumulator};
pub use ids::{check_id, MAX_ID_LEN};
pub use limits::Limits;
pub use meta::{PayloadMeta, RoundMeta, UpdateMeta};
pub use params::{PsgParams, TensorData};
pub use round::{RoundState, RoundStatus, UploadAccepted};
pub use run::{
    CreateRun, RunCreated, RunState, RunStatus, Stage2, MAX_DEADLINE_S, MAX_ROUNDS,
    MAX_STAGE2_STEPS,
};
pub use spec::{NetKind, PsgLayout, PsgSpec, LRNET_TENSOR_NAMES, MAX_LABEL_LEN, PSG_TENSOR_NAMES};
pub use task::{PsgRef, Task, TrainTask};
pub use version::{check_protocol, API_PREFIX, PROTOCOL_VERSION};
