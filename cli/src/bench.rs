//! `fedp2eft bench`: forward and BT-LoRA training-step time, throughput, achieved GFLOP/s and
//! peak memory per model, each workload in a fresh child process. Results go to
//! `<out>/<model>-<date>.json` and a regenerated `<out>/README.md` table; times are recorded,
//! never asserted.
mod flops;
mod peak;
mod personalize;
mod reference;
mod report;
mod versus;
mod worker;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::models::ModelSpec;
use report::{Machine, ModelResult, WorkloadResult};
use worker::{Measured, Shape, Workload};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Models, comma-separated (`e5`, `minilm`, paths); one not available yet is skipped.
    #[arg(long, value_delimiter = ',', default_value = "minilm,e5")]
    pub model: Vec<ModelSpec>,
    /// Workloads, comma-separated [default: forward,train-step; with --vs-reference also
    /// lora-step and personalize].
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Timed iterations after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Tokens per row (every row is exactly this long: no padding).
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// BT-LoRA rank on every adapted linear in the training step (the paper's r_max).
    #[arg(long, default_value_t = 32)]
    pub r_max: usize,
    /// Labels of the classification head (the emoji benchmark's 8 groups).
    #[arg(long, default_value_t = 8)]
    pub labels: usize,
    /// `personalize`: examples per forward and backward pass, the gradient accumulated over
    /// them (`personalize --micro-batch`) [default: whole batches].
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Folder of the JSON results and the README.md table.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Print what would run and where results would go; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run each workload on PyTorch + peft too (scripts/reference/bench_reference.py, same
    /// weights, tokens and threads) and write ratios to `<out>/vs-reference.md`. Default
    /// workloads then: forward, lora-step, train-step, personalize.
    #[arg(long)]
    pub vs_reference: bool,
    /// Python with torch, transformers and peft [default: $FEDP2EFT_PY, else .venv-ref].
    #[arg(long, value_name = "PYTHON")]
    pub reference_python: Option<PathBuf>,
    /// Internal: run one workload in this process and print its measurement as JSON.
    #[arg(long, hide = true)]
    pub worker: Option<Workload>,
    /// Internal: write the reference's job (weights, tokens, settings) here and measure
    /// nothing (its buffers would count in the peak RSS).
    #[arg(long, hide = true)]
    pub job_dir: Option<PathBuf>,
}

impl BenchArgs {
    fn workloads(&self) -> Vec<Workload> {
        match (self.workloads.is_empty(), self.vs_reference) {
            (false, _) => self.workloads.clone(),
            (true, false) => vec![Workload::Forward, Workload::TrainStep],
            (true, true) => vec![
                Workload::Forward,
                Workload::LoraStep,
                Workload::TrainStep,
                Workload::Personalize,
            ],
        }
    }
}

fn model_arg(spec: &ModelSpec) -> OsString {
    match spec {
        ModelSpec::Path(p) => p.as_os_str().to_owned(),
        other => other.to_string().into(),
    }
}

/// The child invocation that measures `w` on `spec`.
fn worker_args(
    w: Workload,
    spec: &ModelSpec,
    args: &BenchArgs,
    home: &Path,
    job_dir: Option<&Path>,
) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["--home".into(), home.into(), "bench".into()];
    if let Some(d) = job_dir {
        v.push("--job-dir".into());
        v.push(d.into());
    }
    for (flag, value) in [
        ("--worker", w.name().into()),
        ("--model", model_arg(spec)),
        ("--iters", args.iters.to_string().into()),
        ("--batch", args.batch.to_string().into()),
        ("--seq", args.seq.to_string().into()),
        ("--r-max", args.r_max.to_string().into()),
        ("--labels", args.labels.to_string().into()),
    ] {
        v.push(flag.into());
        v.push(value);
    }
    if let Some(m) = args.micro_batch {
        v.push("--micro-batch".into());
        v.push(m.to_string().into());
    }
    v
}

/// Runs a worker child: it measures `w` (no `job_dir`) or writes the reference's job.
fn child(
    w: Workload,
    spec: &ModelSpec,
    args: &BenchArgs,
    home: &Path,
    job_dir: Option<&Path>,
) -> Result<std::process::Output> {
    let exe = std::env::current_exe().context("locate the fedp2eft binary")?;
    // stderr stays attached: the child draws its own progress bar and reports its own errors.
    let out = Command::new(exe)
        .args(worker_args(w, spec, args, home, job_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("start the bench worker")?;
    if !out.status.success() {
        bail!("{} on {spec} failed ({})", w.name(), out.status);
    }
    Ok(out)
}

/// Writes the reference's job for `w` into `dir` (in a child of its own).
pub(crate) fn write_job(
    w: Workload,
    spec: &ModelSpec,
    args: &BenchArgs,
    home: &Path,
    dir: &Path,
) -> Result<()> {
    child(w, spec, args, home, Some(dir)).map(drop)
}

pub(crate) fn spawn(
    w: Workload,
    spec: &ModelSpec,
    args: &BenchArgs,
    home: &Path,
) -> Result<Measured> {
    let out = child(w, spec, args, home, None)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("bad worker output: {line}"))
}

pub fn run(args: &BenchArgs, home: &Path) -> Result<()> {
    ensure!(args.iters >= 1, "--iters must be at least 1");
    ensure!(
        args.batch >= 1 && args.seq >= 2,
        "--batch >= 1 and --seq >= 2 required"
    );
    ensure!(
        args.r_max >= 1 && args.labels >= 1,
        "--r-max and --labels must be positive"
    );
    let shape = Shape {
        batch: args.batch,
        seq: args.seq,
        iters: args.iters,
        r_max: args.r_max,
        labels: args.labels,
        micro_batch: args.micro_batch,
    };
    if let Some(w) = args.worker {
        let spec = args.model.first().context("--worker needs one --model")?;
        return worker::run(w, spec, shape, home, args.job_dir.as_deref());
    }
    let machine = Machine::detect();
    println!("machine: {}", machine.describe());
    if machine.profile == "debug" {
        eprintln!("warning: debug build; candle is far slower there: use a --release binary");
    }
    let mut runnable = Vec::new();
    for spec in &args.model {
        match spec.unavailable(home) {
            Some(why) => println!("skip {}: {why}", spec.name()),
            None => runnable.push(spec),
        }
    }
    let date = report::today();
    if args.dry_run {
        let exe = std::env::current_exe().map_or("fedp2eft".into(), |p| p.display().to_string());
        for spec in &runnable {
            for w in args.workloads() {
                let a = worker_args(w, spec, args, home, None);
                let a: Vec<_> = a.iter().map(|s| s.to_string_lossy()).collect();
                println!("would run: {exe} {}", a.join(" "));
            }
            let file = args.out.join(format!("{}-{date}.json", spec.name()));
            println!("would write: {}", file.display());
        }
        println!("would write: {}", args.out.join("README.md").display());
        return Ok(());
    }
    ensure!(
        !runnable.is_empty(),
        "no model to benchmark (see the skips above)"
    );
    if args.vs_reference {
        return versus::run(args, &runnable, shape, &machine, &date, home);
    }
    let mut table = report::table_header();
    for spec in runnable {
        let mut workloads = Vec::new();
        for w in args.workloads() {
            println!(
                "{} {}: 1 warm-up + {} iterations",
                spec.name(),
                w.name(),
                args.iters
            );
            let r = WorkloadResult::new(spawn(w, spec, args, home)?);
            println!(
                "  median {:.3} s, min {:.3} s, {:.0} tokens/s, {:.1} GFLOP/s, peak RSS {}",
                r.median_seconds,
                r.min_seconds,
                r.tokens_per_second,
                r.gflop_per_second,
                r.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB")),
            );
            workloads.push(r);
        }
        let result = ModelResult {
            model: spec.name(),
            date: date.clone(),
            machine: machine.clone(),
            shape,
            warmup_iterations: 1,
            tokens: worker::TOKENS.into(),
            flop_formula: flops::FORMULA.into(),
            workloads,
        };
        table += &report::table_rows(&result);
        let path = report::write_result(&args.out, &result)?;
        println!("wrote {}", path.display());
    }
    let readme = report::write_readme(&args.out)?;
    println!("\n{table}\nwrote {}", readme.display());
    Ok(())
}
