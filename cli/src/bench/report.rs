//! Benchmark results: machine info, one JSON file per model and date, and a markdown table
//! regenerated from every JSON file in the results folder.
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;

use super::worker::{Measured, Shape, Workload};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    /// Whether subnormal floats were flushed to zero (fedp2eft_core::runtime); false in
    /// results written before it existed, when they were not.
    #[serde(default)]
    pub flush_subnormals: bool,
    /// The CPU's SIMD extensions that matter to the kernels (x86: AVX2, FMA, AVX-512 F / BW /
    /// VL / DQ / CD / BF16 / FP16; empty in results written before it existed).
    #[serde(default)]
    pub isa: Vec<String>,
    /// The f32 matmul path: candle's gemm and the kernel level it dispatches to at run time.
    #[serde(default)]
    pub matmul: String,
    /// Threads candle's CPU kernels use (RAYON_NUM_THREADS, else the available cores).
    pub threads: usize,
    pub available_parallelism: usize,
    pub os: String,
    pub git_commit: String,
    pub profile: String,
    pub version: String,
}

impl Machine {
    /// "CPU model, N threads, subnormals flushed|kept": the line every benchmark prints first.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} threads, subnormals {}, ISA {}, matmul {}",
            self.cpu,
            self.threads,
            if self.flush_subnormals {
                "flushed to zero (FTZ/DAZ)"
            } else {
                "kept (IEEE)"
            },
            if self.isa.is_empty() {
                "?".into()
            } else {
                self.isa.join(" ")
            },
            if self.matmul.is_empty() {
                "?"
            } else {
                &self.matmul
            }
        )
    }

    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                let line = t.lines().find(|l| l.starts_with("model name"))?.to_owned();
                Some(line.split_once(':')?.1.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu,
            flush_subnormals: fedp2eft_core::runtime::flushing(),
            isa: isa(),
            matmul: matmul_path().into(),
            threads: candle_core::utils::get_num_threads(),
            available_parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            git_commit: git_commit(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The SIMD extensions the CPU reports, of those the f32 / bf16 kernels could use.
fn isa() -> Vec<String> {
    #[cfg(target_arch = "x86_64")]
    {
        let found = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
            ("avx512dq", std::arch::is_x86_feature_detected!("avx512dq")),
            ("avx512cd", std::arch::is_x86_feature_detected!("avx512cd")),
            (
                "avx512bf16",
                std::arch::is_x86_feature_detected!("avx512bf16"),
            ),
            (
                "avx512fp16",
                std::arch::is_x86_feature_detected!("avx512fp16"),
            ),
        ];
        present(&found)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let found = [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("bf16", std::arch::is_aarch64_feature_detected!("bf16")),
        ];
        present(&found)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    Vec::new()
}

/// The names of the detected features.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn present(found: &[(&str, bool)]) -> Vec<String> {
    found
        .iter()
        .filter(|f| f.1)
        .map(|f| f.0.to_string())
        .collect()
}

/// candle's CPU matmul is the gemm crate (0.19, built with its `x86-v4` feature), which picks
/// its kernels at run time through pulp: AVX-512F when pulp's x86-v4 level is available, else
/// AVX2 + FMA (x86-v3), else portable code.
fn matmul_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if pulp::x86::V4::is_available() {
            "gemm x86-v4 (AVX-512F kernels)"
        } else if pulp::x86::V3::is_available() {
            "gemm x86-v3 (AVX2 + FMA kernels)"
        } else {
            "gemm portable kernels"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "gemm aarch64 (NEON kernels)"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "gemm portable kernels"
    }
}

/// `git rev-parse` of the working directory, `+dirty` with uncommitted changes to tracked files.
fn git_commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}+dirty")
            } else {
                c
            }
        }
        _ => "unknown".into(),
    }
}

/// Summary of one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub workload: Workload,
    pub median_seconds: f64,
    pub min_seconds: f64,
    pub tokens_per_second: f64,
    pub gflop: f64,
    pub gflop_per_second: f64,
    pub peak_rss_mb: Option<f64>,
    pub measured: Measured,
}

impl WorkloadResult {
    pub fn new(m: Measured) -> Self {
        let mut t = m.times_seconds.clone();
        t.sort_by(f64::total_cmp);
        let median = match t.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => t[n / 2],
            n => 0.5 * (t[n / 2 - 1] + t[n / 2]),
        };
        Self {
            workload: m.workload,
            median_seconds: median,
            min_seconds: t.first().copied().unwrap_or(f64::NAN),
            tokens_per_second: m.tokens as f64 / median,
            gflop: m.flops / 1e9,
            gflop_per_second: m.flops / 1e9 / median,
            peak_rss_mb: m.peak_rss_kb.map(|k| k as f64 / 1024.0),
            measured: m,
        }
    }
}

/// One results file: one model on one machine and date.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelResult {
    pub model: String,
    pub date: String,
    pub machine: Machine,
    pub shape: Shape,
    pub warmup_iterations: usize,
    pub tokens: String,
    pub flop_formula: String,
    pub workloads: Vec<WorkloadResult>,
}

/// UTC date `YYYY-MM-DD` (civil-from-days, so no date crate is needed).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn write_result(dir: &Path, r: &ModelResult) -> Result<std::path::PathBuf> {
    let path = dir.join(format!("{}-{}.json", r.model, r.date));
    write_atomic(&path, &(serde_json::to_string_pretty(r)? + "\n"))?;
    Ok(path)
}

pub fn table_header() -> String {
    "| model | date | commit | CPU (threads) | FTZ | b x t | workload | median s | min s | \
     tokens/s | GFLOP/s | peak RSS MB |\n|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|\n"
        .into()
}

pub fn table_rows(r: &ModelResult) -> String {
    let mut s = String::new();
    for w in &r.workloads {
        let rss = w.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0}"));
        s += &format!(
            "| {} | {} | {} | {} ({}) | {} | {}x{} | {} | {:.3} | {:.3} | {:.0} | {:.1} | {rss} |\n",
            r.model,
            r.date,
            r.machine.git_commit,
            r.machine.cpu,
            r.machine.threads,
            if r.machine.flush_subnormals { "on" } else { "off" },
            r.shape.batch,
            r.shape.seq,
            w.workload.name(),
            w.median_seconds,
            w.min_seconds,
            w.tokens_per_second,
            w.gflop_per_second,
        );
    }
    s
}

/// Regenerates `README.md` from every result file in `dir`, oldest first.
pub fn write_readme(dir: &Path) -> Result<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut results: Vec<ModelResult> = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f).map(|t| serde_json::from_str::<ModelResult>(&t)) {
            Ok(Ok(r)) => results.push(r),
            _ => eprintln!("warning: skipping {} (not a bench result)", f.display()),
        }
    }
    results.sort_by(|a, b| (&a.date, &a.model).cmp(&(&b.date, &b.model)));
    let mut md = String::from(
        "# Benchmark results\n\nWritten by `fedp2eft bench` (one JSON file per model and date; \
         this table is regenerated from all of them). Each workload runs in a fresh child \
         process: 1 warm-up iteration, then N timed ones; peak RSS is the child's VmHWM \
         (model load included).\n\n",
    );
    if let Some(r) = results.last() {
        md += &format!(
            "Tokens: {}. train-step = one BT-LoRA step (r_max {} on every adapted linear, λ \
             trainable, CE + priors, backward, AdamW) through `train::train`; forward = base \
             model, adapters off.\n\nFLOPs: {}.\n\n",
            r.tokens, r.shape.r_max, r.flop_formula
        );
    }
    md += &table_header();
    for r in &results {
        md += &table_rows(r);
    }
    let path = dir.join("README.md");
    write_atomic(&path, &md)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_plausible_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.as_str() >= "2024-01-01", "{d}");
    }

    #[test]
    fn median_and_min() {
        let m = Measured {
            workload: Workload::Forward,
            load_seconds: 0.0,
            warmup_seconds: 0.0,
            times_seconds: vec![3.0, 1.0, 2.0, 10.0],
            tokens: 100,
            flops: 5e9,
            rss_after_load_kb: None,
            peak_rss_kb: Some(2048),
            detail: None,
        };
        let w = WorkloadResult::new(m);
        assert_eq!(w.median_seconds, 2.5);
        assert_eq!(w.min_seconds, 1.0);
        assert_eq!(w.gflop_per_second, 2.0);
        assert_eq!(w.peak_rss_mb, Some(2.0));
    }
}
