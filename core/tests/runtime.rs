//! Subnormals are flushed on every thread that computes while core computes, and the caller's
//! own mode comes back afterwards (core/src/runtime.rs). One test in this binary on purpose:
//! the pools flush for the rest of the process after the first `enter`, so the "before" half
//! must run before anything else here enters.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test here
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use fedp2eft_core::{kernels, runtime, Control, Progress, Stage};

// Results are compared as bits: with DAZ on, a float comparison reads a subnormal as 0. The
// products go through black_box both ways: LLVM does not order register arithmetic against
// mode changes.

/// 2^-126 · 2^-10: subnormal under IEEE rules, 0 when results are flushed.
fn tiny_product() -> u32 {
    black_box(black_box(f32::MIN_POSITIVE) * black_box(1.0 / 1024.0)).to_bits()
}

/// A subnormal input times one: kept under IEEE rules, 0 when inputs are read as zero.
fn subnormal_input() -> u32 {
    black_box(black_box(f32::from_bits(1 << 20)) * black_box(1.0)).to_bits()
}

fn filled(v: f32, shape: (usize, usize)) -> Tensor {
    Tensor::full(v, shape, &Device::Cpu).unwrap()
}

/// How many values are not +0 (bit for bit).
fn nonzero(t: &Tensor) -> usize {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.iter().filter(|x| x.to_bits() != 0).count()
}

/// Non-zero results of the kinds of parallel work core runs, on inputs built so that every
/// product is subnormal: candle's matmul (gemm on rayon's pool), the fused linear (gemm + our
/// rayon loops), an element-wise product of 2^20 values (candle's barrier pool); and the fused
/// linear on subnormal activations.
fn parallel_results() -> [usize; 4] {
    let (n, k) = (256, 384);
    let tiny = filled(1e-21, (n, k)); // each product 1e-42 and their sum 3.8e-40: subnormal
    let w = filled(1e-21, (k, k));
    let matmul = tiny.matmul(&w).unwrap();
    let fused = kernels::frozen_linear(&tiny, &w, None).unwrap();
    let big = filled(1e-30, (1024, 1024));
    let elementwise = (&big * &filled(1e-10, (1024, 1024))).unwrap();
    // 1.5e-39 (subnormal) · 1e9: normal products, so only reading inputs as zero gives 0.
    let sub = filled(f32::from_bits(1 << 20), (n, k));
    let fused_daz = kernels::frozen_linear(&sub, &filled(1e9, (k, k)), None).unwrap();
    [&matmul, &fused, &elementwise, &fused_daz].map(nonzero)
}

#[test]
fn every_compute_thread_flushes_and_the_caller_gets_its_mode_back() {
    let caller = fedp2eft_fpenv::current();
    if !runtime::enabled() {
        // Opted out (FEDP2EFT_FLUSH_SUBNORMALS=0) or a CPU without the mode: nothing changes.
        let _c = runtime::enter();
        assert_eq!(fedp2eft_fpenv::current(), caller);
        return;
    }

    // Before any computation: IEEE gradual underflow everywhere (so the checks below can fail).
    assert!(tiny_product() != 0 && subnormal_input() != 0);
    let before = runtime::pool_modes();
    assert!(before.rayon.iter().all(|f| !f), "{before:?}");
    let every = [256 * 384, 256 * 384, 1024 * 1024, 256 * 384];
    assert_eq!(parallel_results(), every);

    let seen_by_listener = Arc::new(Mutex::new(None));
    {
        let _c = runtime::enter();
        // The calling thread and every worker of every pool flush, asked on each of them.
        assert!(runtime::flushing());
        assert_eq!((tiny_product(), subnormal_input()), (0, 0));
        let modes = runtime::pool_modes();
        assert!(modes.all() && !modes.rayon.is_empty(), "{modes:?}");
        let (rayon, barrier, candle) =
            runtime::on_every_worker(|| (tiny_product(), subnormal_input()));
        for (pool, products) in [("rayon", rayon), ("barrier", barrier), ("candle", candle)] {
            assert!(
                products.iter().all(|&p| p == (0, 0)),
                "{pool}: {products:?}"
            );
        }
        // Inside real parallel computations: every result flushed.
        assert_eq!(parallel_results(), [0; 4]);

        // Code of the caller's (a progress listener) runs in the caller's mode.
        let seen = seen_by_listener.clone();
        let ctl = Control::new(move |_: &Progress| {
            *seen.lock().unwrap() = Some((tiny_product(), fedp2eft_fpenv::current()));
        });
        ctl.report(Progress {
            stage: Stage::Train,
            phase: "test".into(),
            done: 1,
            total: 1,
            loss: None,
        });
        assert!(runtime::flushing(), "flushing resumes after the listener");
        // Nested entries (an entry point calling another) restore the outer one's mode.
        drop(runtime::enter());
        assert!(runtime::flushing());
    }
    let (product, mode) = seen_by_listener.lock().unwrap().unwrap();
    assert_ne!(product, 0);
    assert_eq!(mode.without_flags(), caller.without_flags());

    // The caller's mode is back; the pools (the library's own) keep flushing.
    assert_eq!(
        fedp2eft_fpenv::current().without_flags(),
        caller.without_flags()
    );
    assert!(tiny_product() != 0 && subnormal_input() != 0);
    assert!(runtime::pool_modes().all());
}
