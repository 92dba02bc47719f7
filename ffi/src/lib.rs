//! fedp2eft for apps (UniFFI proc-macros): a `Personalizer` holds a base model and the user's
//! local examples; `personalize(budget, listener)` runs the whole pipeline on the device and
//! returns a report; `cancel()` stops it from another thread.
//!
//! Threading: every method blocks the calling thread until it is done; call `personalize` from
//! a worker thread (a coroutine on `Dispatchers.IO`, a `Task.detached`, a Python thread). The
//! listener is called on that same thread, between steps; `cancel()` may be called from any
//! thread and takes effect at the next step (the call then fails with `FedError::Cancelled`).
//!
//! Floating point: while a call computes, the calling thread flushes subnormal floats to zero
//! (they make Intel cores up to 20× slower, `fedp2eft_core::runtime`); the thread's own mode
//! is restored when the call returns, and the listener runs in it too, so the app's other
//! floating-point work is never changed. The library's worker threads always flush.
mod error;
mod federation;
mod personalizer;

pub use error::FedError;
pub use federation::{FederatedRun, RoundReport};
pub use personalizer::{
    emoji_benchmark_client, Example, LayerRank, LocalData, PersonalizeOptions, Personalizer,
    Progress, ProgressListener, Report,
};

uniffi::setup_scaffolding!();
