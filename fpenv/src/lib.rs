//! The calling thread's floating-point environment, reduced to what a training runtime needs:
//! flush-to-zero (FTZ: subnormal results become ±0) and denormals-are-zero (DAZ: subnormal
//! inputs are read as ±0).
//!
//! Why: Intel cores execute arithmetic on subnormal floats through microcode assists, about
//! a hundred times slower than on normal numbers, and training produces subnormals (exponentials
//! far below a softmax row's maximum, products of small gradients). PyTorch, ONNX Runtime and
//! TensorFlow all offer or set the same mode. The mode is per thread, so whoever owns a thread
//! decides: `fedp2eft-core::runtime` sets it on its compute pools and, through [`FlushGuard`],
//! on the caller's thread for the duration of a call, restoring the caller's mode afterwards.
//!
//! x86_64: MXCSR bits FTZ (15) and DAZ (6; only where the CPU's MXCSR_MASK has it).
//! aarch64: FPCR.FZ (24, both directions for f32/f64) and FPCR.FZ16 (19) where the CPU has
//! half-precision arithmetic. Elsewhere nothing is changed and [`supported`] is false.
//!
//! This crate has no dependencies, so the aggregation server uses it without compiling candle.
mod guard;
mod register;

pub use guard::{as_caller, flush_this_thread, FlushGuard};
pub use register::{current, set, supported, Mode};
