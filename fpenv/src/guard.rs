//! Flushing for the length of a call, and the caller's own mode back where its code runs.
use std::cell::Cell;
use std::marker::PhantomData;

use crate::register::{current, set, Mode};

thread_local! {
    /// The mode the outermost live guard of this thread found: the caller's.
    static CALLER: Cell<Option<Mode>> = const { Cell::new(None) };
}

/// Sets flush-to-zero and denormals-are-zero on the calling thread for good (for threads the
/// runtime owns: pool workers, scoped helpers).
pub fn flush_this_thread() {
    set(current().flushing());
}

/// Flushes subnormals on the calling thread while it lives; dropping it restores the whole
/// control word it found (rounding mode and status flags included). Guards nest. Not `Send`:
/// the mode belongs to the thread that made it.
#[must_use = "the mode is restored when the guard is dropped"]
pub struct FlushGuard {
    before: Mode,
    outermost: bool,
    _thread_bound: PhantomData<*const ()>,
}

impl FlushGuard {
    pub fn new() -> Self {
        let before = current();
        let outermost = CALLER.with(|c| {
            let first = c.get().is_none();
            if first {
                c.set(Some(before));
            }
            first
        });
        set(before.flushing());
        Self {
            before,
            outermost,
            _thread_bound: PhantomData,
        }
    }
}

impl Default for FlushGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        set(self.before);
        if self.outermost {
            CALLER.with(|c| c.set(None));
        }
    }
}

/// Runs `f` in the mode the caller had before the outermost live guard of this thread (as is
/// when there is none): for the caller's own code that a computation calls back, such as a
/// progress listener, so that code never runs in a mode it did not choose.
pub fn as_caller<R>(f: impl FnOnce() -> R) -> R {
    let Some(caller) = CALLER.with(Cell::get) else {
        return f();
    };
    /// Puts the computation's mode back even if `f` unwinds.
    struct Back(Mode);
    impl Drop for Back {
        fn drop(&mut self) {
            set(self.0)
        }
    }
    let _back = Back(current());
    set(caller);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supported;
    use std::hint::black_box;

    // Results are compared as bits: with DAZ on, a float comparison reads a subnormal as 0.
    // The products go through black_box both ways: LLVM does not order floating-point
    // arithmetic against a mode change, so a product kept in a register could be computed
    // after the next `set` (real computations store their results, which orders them).

    /// 2^-126 · 2^-10: a subnormal product under IEEE rules, 0 when results are flushed.
    fn tiny_product() -> u32 {
        black_box(black_box(f32::MIN_POSITIVE) * black_box(1.0 / 1024.0)).to_bits()
    }

    /// A subnormal input: kept under IEEE rules, read as 0 when inputs are flushed.
    fn subnormal_times_one() -> u32 {
        black_box(black_box(f32::from_bits(1)) * black_box(1.0)).to_bits()
    }

    #[test]
    fn guard_flushes_and_restores() {
        if !supported() {
            return;
        }
        assert!(tiny_product() != 0 && subnormal_times_one() != 0);
        let before = current();
        {
            let _g = FlushGuard::new();
            assert!(current().is_flushing());
            assert_eq!(tiny_product(), 0, "results flushed");
            assert_eq!(subnormal_times_one(), 0, "inputs read as zero");
            {
                let _inner = FlushGuard::new();
                assert_eq!(tiny_product(), 0);
            }
            assert_eq!(
                tiny_product(),
                0,
                "an inner guard restores the outer's mode"
            );
            let (product, mode) = as_caller(|| (tiny_product(), current()));
            assert_ne!(product, 0, "the caller's code runs in the caller's mode");
            assert_eq!(mode.without_flags(), before.without_flags());
            assert_eq!(tiny_product(), 0, "and flushing resumes after it");
        }
        assert_eq!(current(), before, "the whole word, status flags included");
        assert_ne!(tiny_product(), 0);
    }

    #[test]
    fn restores_a_caller_mode_that_is_not_the_default() {
        if !supported() {
            return;
        }
        let default = current();
        // A caller that flushes already (as some audio and game engines do) keeps its mode,
        // and so does one with gradual underflow: the guard restores what it found, bit for bit.
        for caller in [default.flushing(), default.gradual()] {
            set(caller);
            drop(FlushGuard::new());
            assert_eq!(current(), caller);
            let seen = {
                let _g = FlushGuard::new();
                as_caller(current)
            };
            assert_eq!(seen, caller);
        }
        set(default);
    }

    #[test]
    fn restores_after_a_panic_in_the_callback() {
        if !supported() {
            return;
        }
        let _g = FlushGuard::new();
        let r = std::panic::catch_unwind(|| as_caller(|| panic!("listener failed")));
        assert!(r.is_err());
        assert!(current().is_flushing());
    }

    #[test]
    fn without_a_guard_as_caller_changes_nothing() {
        let before = current();
        assert_eq!(as_caller(current), before);
    }
}
