//! How core's compute threads treat subnormal floats: every thread that computes flushes them
//! to zero (FTZ) and reads them as zero (DAZ). Intel cores run arithmetic on subnormals through
//! microcode assists, and training produces them (docs/performance.md, "Subnormal floats"): a
//! fine-tune ran 21× slower without this. The one place that names the thread pools.
//!
//! - The compute pools (rayon's global pool, which gemm, our kernels and the tokenizer use;
//!   candle's barrier pool of element-wise ops; candle's own rayon pool) flush from the first
//!   [`enter`] of the process on. They belong to the library: an app's threads are not in them.
//! - The calling thread flushes while the [`Compute`] guard lives, and gets back exactly the
//!   mode it had when the guard drops. Code of the caller's that a computation calls back
//!   (progress listeners, through [`crate::Control::report`]) runs in the caller's own mode.
//!
//! Every public entry point that computes (personalize, the training loop, evaluation,
//! features, the PSG, a federated round, the model's forward) enters; guards nest.
//!
//! `FEDP2EFT_FLUSH_SUBNORMALS=0` in the environment keeps IEEE gradual underflow everywhere
//! (read once per process): for comparing results and speed with and without the flush.
//!
//! The first [`enter`] also fixes two of candle's settings that it reads from the environment,
//! unless the user set them (docs/performance.md, "Pool settings and weight layout"):
//! - `RAYON_NUM_THREADS`: candle asks for the thread count on every matmul, and without the
//!   variable counts the physical cores by parsing `/proc/cpuinfo` each time (≈ 6 % of a
//!   `personalize` in micro-batches). It is set to the count candle computes, once: the same
//!   threads as before, after rayon's global pool is built (so its size does not change).
//! - `CANDLE_BARRIER_POOL_SPIN_LIMIT`: candle's element-wise workers spin 25,000 times after each
//!   op before parking, taking a core from the matmul that follows on a machine of few cores.
use std::sync::{Mutex, Once, OnceLock};

use candle_core::Device;
use fedp2eft_fpenv::FlushGuard;

pub use fedp2eft_fpenv::{as_caller, flush_this_thread, supported};

static POOLS: Once = Once::new();
static SETTINGS: Once = Once::new();

/// Spins of candle's element-wise workers before they park: a few microseconds.
pub const BARRIER_SPIN_LIMIT: u32 = 200;

/// While alive, the calling thread flushes subnormals; dropping it restores the caller's mode.
#[must_use = "the caller's mode is restored when this is dropped"]
pub struct Compute {
    _guard: Option<FlushGuard>,
}

/// Starts a computation on the calling thread (see the module docs).
pub fn enter() -> Compute {
    settle_pool_settings();
    if !enabled() {
        return Compute { _guard: None };
    }
    let guard = FlushGuard::new();
    POOLS.call_once(|| {
        on_every_worker(flush_this_thread);
    });
    Compute {
        _guard: Some(guard),
    }
}

/// Fixes candle's thread count and spin limit in the environment before its pools exist (see
/// the module docs); a value the user set is kept.
fn settle_pool_settings() {
    SETTINGS.call_once(|| {
        // Builds rayon's global pool with the size rayon chooses, before the variable exists.
        let _ = rayon::current_num_threads();
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let threads = candle_core::utils::get_num_threads();
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var(
                "CANDLE_BARRIER_POOL_SPIN_LIMIT",
                BARRIER_SPIN_LIMIT.to_string(),
            );
        }
    });
}

/// Whether computations flush subnormals: the CPU can, and the environment does not opt out.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        supported() && std::env::var("FEDP2EFT_FLUSH_SUBNORMALS").map_or(true, |v| v.trim() != "0")
    })
}

/// Whether the calling thread flushes subnormals now.
pub fn flushing() -> bool {
    fedp2eft_fpenv::current().is_flushing()
}

/// Whether each worker of each compute pool flushes subnormals, asked on the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolModes {
    /// rayon's global pool (gemm, the fused kernels, the tokenizer).
    pub rayon: Vec<bool>,
    /// candle's barrier pool (element-wise ops on large tensors); may be empty with one thread.
    pub candle_barrier: Vec<bool>,
    /// candle's own rayon pool (`Device::with_context`).
    pub candle_rayon: Vec<bool>,
}

impl PoolModes {
    /// Every worker of every pool flushes.
    pub fn all(&self) -> bool {
        [&self.rayon, &self.candle_barrier, &self.candle_rayon]
            .iter()
            .all(|p| p.iter().all(|&f| f))
    }
}

/// Runs `f` on every worker of every compute pool and returns what each gave, pool by pool.
pub fn on_every_worker<T: Send>(f: impl Fn() -> T + Sync) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rayon = rayon::broadcast(|_| f());
    let n = candle_core::utils::barrier_pool().n_workers();
    let slots: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    // The calling thread takes part as worker n; it is not a pool worker, so it is skipped.
    candle_core::utils::barrier_pool().execute(|tid| {
        if let Some(slot) = slots.get(tid) {
            let v = f();
            if let Ok(mut s) = slot.lock() {
                *s = Some(v);
            }
        }
    });
    let barrier = slots
        .into_iter()
        .filter_map(|s| s.into_inner().ok().flatten())
        .collect();
    let candle_rayon = Device::Cpu.with_context(|| rayon::broadcast(|_| f()));
    (rayon, barrier, candle_rayon)
}

/// The flush mode of every compute pool worker.
pub fn pool_modes() -> PoolModes {
    let (rayon, candle_barrier, candle_rayon) = on_every_worker(flushing);
    PoolModes {
        rayon,
        candle_barrier,
        candle_rayon,
    }
}
