//! The first `runtime::enter` fixes candle's thread count and spin limit in the environment
//! (core/src/runtime.rs) without changing how many threads anything runs on. Its own binary:
//! the settings are made once per process.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test here
use fedp2eft_core::runtime;

#[test]
fn first_enter_fixes_the_thread_count_and_spin_limit_and_keeps_the_pools() {
    let user_threads = std::env::var("RAYON_NUM_THREADS").ok();
    let user_spin = std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT").ok();
    let candle_threads = candle_core::utils::get_num_threads();
    let rayon_threads = rayon::current_num_threads();

    let _c = runtime::enter();

    let threads = std::env::var("RAYON_NUM_THREADS").unwrap();
    match &user_threads {
        Some(v) => assert_eq!(&threads, v, "a user's thread count is kept"),
        None => assert_eq!(threads, candle_threads.to_string()),
    }
    assert_eq!(candle_core::utils::get_num_threads(), candle_threads);
    assert_eq!(rayon::current_num_threads(), rayon_threads);
    let spin = std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT").unwrap();
    match &user_spin {
        Some(v) => assert_eq!(&spin, v, "a user's spin limit is kept"),
        None => assert_eq!(spin, runtime::BARRIER_SPIN_LIMIT.to_string()),
    }
}
