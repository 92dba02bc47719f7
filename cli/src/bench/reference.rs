//! The reference side of `bench --vs-reference`: the job file our worker hands to
//! scripts/reference/bench_reference.py (same weights, token ids, threads and sizes), and the
//! run of that script in its own process.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use fedp2eft_core::model::{save_hf_classifier, SeqClassifier};
use fedp2eft_core::train::Encoded;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::worker::{Shape, Workload};

/// The job file's name inside a job folder.
pub const JOB: &str = "job.json";

/// Threads both sides use: candle's CPU thread count (RAYON_NUM_THREADS, else the cores).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

fn rows_json(rows: &[Encoded]) -> Value {
    rows.iter()
        .map(|r| json!({"ids": r.ids, "label": r.label}))
        .collect()
}

fn write_job(dir: &Path, job: &Value) -> Result<()> {
    let path = dir.join(JOB);
    std::fs::write(&path, serde_json::to_vec_pretty(job)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Forward / step workloads: the benchmarked model (head included, before any adapter) in HF
/// format and the exact batch.
pub fn write_step_job(
    dir: &Path,
    model: &SeqClassifier,
    rows: &[Encoded],
    shape: Shape,
) -> Result<()> {
    let model_dir = dir.join("model");
    save_hf_classifier(model, &model_dir).with_context(|| {
        format!(
            "writing the reference's copy of the model to {}",
            model_dir.display()
        )
    })?;
    write_job(
        dir,
        &json!({
            "model_dir": model_dir,
            "labels": model.num_labels(),
            "ids": rows.iter().map(|r| &r.ids).collect::<Vec<_>>(),
            "labels_of_rows": rows.iter().map(|r| r.label).collect::<Vec<_>>(),
            "threads": threads(),
            "flush_subnormals": fedp2eft_core::runtime::flushing(),
            "iters": shape.iters,
            "r_max": shape.r_max,
        }),
    )
}

/// What the personalize reference needs: the base model folder (HF format), the PSG file, the
/// client's encoded train and test sets and the fine-tune settings.
pub struct PersonalizeJob<'a> {
    pub model_dir: &'a Path,
    pub labels: usize,
    pub psg: &'a Path,
    pub budget: usize,
    pub r_max: usize,
    pub lora_alpha: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub eval_batch: usize,
    pub seed: u64,
    pub train: &'a [Encoded],
    pub test: &'a [Encoded],
}

pub fn write_personalize_job(dir: &Path, j: &PersonalizeJob) -> Result<()> {
    write_job(
        dir,
        &json!({
            "model_dir": j.model_dir,
            "labels": j.labels,
            "threads": threads(),
            "flush_subnormals": fedp2eft_core::runtime::flushing(),
            "psg": j.psg,
            "budget": j.budget,
            "r_max": j.r_max,
            "lora_alpha": j.lora_alpha,
            "epochs": j.epochs,
            "batch_size": j.batch_size,
            "lr": j.lr,
            "eval_batch": j.eval_batch,
            "seed": j.seed,
            "train": rows_json(j.train),
            "test": rows_json(j.test),
        }),
    )
}

/// What the reference script printed (its own fields; `workload` and the times as ours).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefMeasured {
    #[serde(default)]
    pub times_seconds: Vec<f64>,
    pub load_seconds: f64,
    pub peak_rss_kb: Option<u64>,
    pub torch: String,
    pub threads: usize,
    /// Whether torch ran with `set_flush_denormal(True)` (as ours flushes, when it does).
    #[serde(default)]
    pub flush_subnormals: bool,
    /// torch's kernel level (`torch.backends.cpu.get_cpu_capability()`: "AVX512", "AVX2", …).
    #[serde(default)]
    pub cpu_capability: String,
    #[serde(default)]
    pub detail: Option<Value>,
}

/// The reference's Python: `--reference-python`, else $FEDP2EFT_PY, else `.venv-ref` (made by
/// scripts/reference/setup-venv.sh).
pub fn python(explicit: Option<&Path>, root: &Path) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("FEDP2EFT_PY").map(PathBuf::from))
        .unwrap_or_else(|| root.join(".venv-ref/bin/python"))
}

/// Runs the reference workload on the job in `dir`.
pub fn run(python: &Path, script: &Path, dir: &Path, w: Workload) -> Result<RefMeasured> {
    let threads = threads().to_string();
    let out = Command::new(python)
        .arg(script)
        .arg(dir.join(JOB))
        .arg(w.reference_name())
        .env("OMP_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting the reference ({})", python.display()))?;
    if !out.status.success() {
        bail!("reference {} failed ({})", w.name(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    let v: Value =
        serde_json::from_str(line).with_context(|| format!("bad reference output: {line}"))?;
    let mut m: RefMeasured = serde_json::from_value(v.clone())
        .with_context(|| format!("bad reference output: {line}"))?;
    if m.times_seconds.is_empty() {
        // personalize reports one run: its total time.
        if let Some(t) = v["timings"]["total_s"].as_f64() {
            m.times_seconds.push(t);
        }
    }
    if m.detail.is_none() {
        m.detail = Some(v);
    }
    Ok(m)
}
