//! Progress events and cancellation, shared by every long-running core function so the CLI
//! can draw bars and the FFI can forward callbacks.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::{Error, Result};

/// Which step of the pipeline an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Features,
    Train,
    Evaluate,
    Psg,
    Merge,
}

/// One progress tick: `done` of `total` units of `stage`, with the last loss when training.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub stage: Stage,
    /// A short label such as "bt-lora stage 1" or "fine-tune".
    pub phase: String,
    pub done: usize,
    pub total: usize,
    pub loss: Option<f32>,
}

/// Cloneable cancellation flag; checking it between steps keeps a cancelled run's state valid.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// `Err(Cancelled)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// A progress listener shared across threads.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What a long-running function reports to and is stopped by.
#[derive(Clone, Default)]
pub struct Control {
    pub cancel: CancelToken,
    progress: Option<ProgressFn>,
}

impl Control {
    pub fn new(progress: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        Self {
            cancel: CancelToken::new(),
            progress: Some(Arc::new(progress)),
        }
    }
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }
    /// Calls the listener in the caller's own floating-point mode (`runtime::as_caller`): it is
    /// the caller's code, run on the caller's thread in the middle of a computation.
    pub fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            crate::runtime::as_caller(|| f(&p))
        }
    }
}
