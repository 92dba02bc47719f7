//! The machine's f32 peak, two ways: nominal from the CPU (cores × clock × FLOP per cycle) and
//! measured (the best rate of a large square matmul through candle's gemm, all threads).
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    /// cores × MHz (from /proc/cpuinfo) × FLOP/cycle.
    pub nominal_gflops: Option<f64>,
    pub flop_per_cycle: f64,
    pub mhz: Option<f64>,
    /// Best of 5 timed 2048³ matmuls.
    pub measured_gflops: f64,
    pub how: String,
}

/// f32 FLOP per cycle per core: two FMA pipes of 512 bits (16 lanes · 2 FLOP · 2) with
/// AVX-512, of 256 bits with AVX2 only. (Zen 4 executes 512-bit FMAs in two halves, so this
/// over-states its peak; the measured figure is the one the ratios use.)
fn flop_per_cycle() -> f64 {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if flags.contains("avx512f") {
        64.0
    } else if flags.contains(" fma") {
        32.0
    } else {
        8.0
    }
}

fn mhz() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("cpu MHz"))?;
    line.split_once(':')?.1.trim().parse().ok()
}

pub fn measure(threads: usize) -> Result<Peak> {
    let n = 2048;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    a.matmul(&b)?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        a.matmul(&b)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let fpc = flop_per_cycle();
    let mhz = mhz();
    Ok(Peak {
        nominal_gflops: mhz.map(|m| threads as f64 * m * 1e-3 * fpc),
        flop_per_cycle: fpc,
        mhz,
        measured_gflops: 2.0 * (n as f64).powi(3) / best / 1e9,
        how: format!(
            "nominal = {threads} threads × cpu MHz × {fpc} FLOP/cycle; measured = best of 5 \
             {n}×{n}×{n} f32 matmuls (candle → gemm) on {threads} threads"
        ),
    })
}
