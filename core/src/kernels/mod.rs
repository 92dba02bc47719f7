//! CPU kernels with hand-written backward passes for the ops that dominate a BT-LoRA step.
//!
//! candle's autograd computes a gradient for every input of every op, frozen or not, and runs
//! layer norm and softmax as chains of element-wise ops, each allocating a buffer (and, in
//! training, keeping it alive until the backward pass). These custom ops do one pass forward and
//! one backward, and never differentiate a frozen weight. Each is checked against the composite
//! candle form it replaces (values and gradients) in `core/tests/kernels.rs`.
//!
//! Element-wise loops run inside `pulp::Arch::dispatch`, which compiles them for the best vector
//! ISA the CPU has (AVX-512, AVX2, NEON) behind a runtime check; the default build stays
//! portable.
mod attention;
mod gelu;
mod linear;
mod math;
mod norm;
mod simd;
mod softmax;
mod tile;

pub use attention::attention;
pub use gelu::gelu;
pub use linear::{frozen_linear, linear_of_gelu, lora_linear, weight_layout};
pub use norm::{add_layer_norm, layer_norm};
pub use softmax::masked_softmax;

use candle_core::{CpuStorage, DType, Device, Layout, Tensor};
use rayon::iter::ParallelExtend;

/// Whether the fused kernels serve this tensor (CPU, f32); other devices use composite ops.
pub fn supported(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// The contiguous f32 slice a layout describes.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let v = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused kernel needs a contiguous input"),
    }
}

/// A zero-filled f32 buffer of `len` values, written by the compute pool. `vec![0.0; len]`
/// reuses freed memory through one memset on the calling thread while the pool waits: on an
/// e5 LoRA step (Intel Xeon Sapphire Rapids, 2 threads) those memsets were a tenth of the
/// step's time, serial.
fn zeroed(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    if len < 1 << 16 {
        v.resize(len, 0.0);
    } else {
        v.par_extend(rayon::iter::repeat_n(0f32, len));
    }
    v
}

/// Rows per parallel task: enough work per task to amortise the scheduling.
fn rows_per_task(rows: usize, cols: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_threads = rows.div_ceil(threads * 4).max(1);
    let min_rows = (16_384 / cols.max(1)).max(1);
    by_threads.max(min_rows).min(rows.max(1))
}
