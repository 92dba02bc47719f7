//! `fedp2eft bench --vs-reference`: each workload on ours, then on PyTorch + peft, back to back
//! in fresh processes on the same weights, tokens and threads; ratios ours / reference.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::peak::{self, Peak};
use super::reference::{self, RefMeasured};
use super::report::Machine;
use super::worker::{Measured, Shape, Workload};
use super::{spawn, write_job, BenchArgs};
use crate::models::ModelSpec;

#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub model: String,
    pub workload: Workload,
    pub ours_seconds: f64,
    pub reference_seconds: f64,
    pub time_ratio: f64,
    pub ours_peak_rss_mb: Option<f64>,
    pub reference_peak_rss_mb: Option<f64>,
    pub rss_ratio: Option<f64>,
    pub ours_gflops: Option<f64>,
    pub reference_gflops: Option<f64>,
    pub ours: Measured,
    pub reference: RefMeasured,
}

#[derive(Debug, Clone, Serialize)]
struct Report<'a> {
    date: &'a str,
    machine: &'a Machine,
    shape: Shape,
    peak: Peak,
    pairs: Vec<Pair>,
}

fn median(t: &[f64]) -> f64 {
    let mut t = t.to_vec();
    t.sort_by(f64::total_cmp);
    match t.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => t[n / 2],
        n => 0.5 * (t[n / 2 - 1] + t[n / 2]),
    }
}

fn mb(kb: Option<u64>) -> Option<f64> {
    kb.map(|k| k as f64 / 1024.0)
}

fn pair(model: String, w: Workload, ours: Measured, reference: RefMeasured) -> Pair {
    let (o, r) = (
        median(&ours.times_seconds),
        median(&reference.times_seconds),
    );
    let (om, rm) = (mb(ours.peak_rss_kb), mb(reference.peak_rss_kb));
    let gf = |s: f64| (ours.flops > 0.0).then(|| ours.flops / 1e9 / s);
    Pair {
        model,
        workload: w,
        ours_seconds: o,
        reference_seconds: r,
        time_ratio: o / r,
        ours_peak_rss_mb: om,
        reference_peak_rss_mb: rm,
        rss_ratio: om.zip(rm).map(|(a, b)| a / b),
        ours_gflops: gf(o),
        reference_gflops: gf(r),
        ours,
        reference,
    }
}

fn table(report: &Report) -> String {
    let p = &report.peak;
    let mut s = format!(
        "# fedp2eft vs PyTorch + peft\n\nWritten by `fedp2eft bench --vs-reference` on {} \
         ({}; commit {}). Each cell is the median of the timed iterations \
         (personalize: of as many runs, alternating sides; its peak is the largest), each \
         workload in a fresh process per side; ratio = ours / reference (below 1: ours is \
         faster or smaller). Peak RSS includes model loading and, for the reference, the \
         Python + torch runtime. Reference: torch {} ({} threads, subnormals {}, kernels {}), \
         scripts/reference/bench_reference.py.\n\nPeak f32: measured {:.0} GFLOP/s, nominal {} \
         ({}).\n\n| model | workload | ours s | reference s | time ratio | ours MB | reference MB \
         | RSS ratio | ours GFLOP/s | ref GFLOP/s | ours % of measured peak |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        report.date,
        report.machine.describe(),
        report.machine.git_commit,
        report
            .pairs
            .first()
            .map_or("?", |x| x.reference.torch.as_str()),
        report.pairs.first().map_or(0, |x| x.reference.threads),
        match report.pairs.first().map(|x| x.reference.flush_subnormals) {
            Some(true) => "flushed",
            Some(false) => "kept",
            None => "?",
        },
        report
            .pairs
            .first()
            .map(|x| x.reference.cpu_capability.as_str())
            .filter(|c| !c.is_empty())
            .unwrap_or("?"),
        p.measured_gflops,
        p.nominal_gflops
            .map_or("n/a".into(), |g| format!("{g:.0} GFLOP/s")),
        p.how,
    );
    let f = |x: Option<f64>, d: usize| x.map_or("–".into(), |v| format!("{v:.d$}"));
    for x in &report.pairs {
        s += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.2} | {} | {} | {} | {} | {} | {} |\n",
            x.model,
            x.workload.name(),
            x.ours_seconds,
            x.reference_seconds,
            x.time_ratio,
            f(x.ours_peak_rss_mb, 0),
            f(x.reference_peak_rss_mb, 0),
            f(x.rss_ratio, 2),
            f(x.ours_gflops, 1),
            f(x.reference_gflops, 1),
            f(x.ours_gflops.map(|g| 100.0 * g / p.measured_gflops), 0),
        );
    }
    s
}

pub fn run(
    args: &BenchArgs,
    models: &[&ModelSpec],
    shape: Shape,
    machine: &Machine,
    date: &str,
    home: &Path,
) -> Result<()> {
    let root = std::env::current_dir()?;
    let script = root.join("scripts/reference/bench_reference.py");
    anyhow::ensure!(
        script.exists(),
        "{} not found: run from the repository root",
        script.display()
    );
    let python = reference::python(args.reference_python.as_deref(), &root);
    anyhow::ensure!(
        python.exists(),
        "no reference Python at {}: run scripts/reference/setup-venv.sh or pass \
         --reference-python",
        python.display()
    );
    println!("measuring the f32 peak");
    let peak = peak::measure(reference::threads())?;
    let mut pairs = Vec::new();
    for spec in models {
        for w in args.workloads() {
            let jobs = tempfile::tempdir().context("temporary job folder")?;
            println!("{} {}: ours", spec.name(), w.name());
            match write_job(w, spec, args, home, jobs.path()) {
                Ok(()) => {}
                Err(e) if w == Workload::Personalize => {
                    println!("  skipped: {e:#}");
                    continue;
                }
                Err(e) => return Err(e),
            }
            let mut ours = spawn(w, spec, args, home)?;
            println!("{} {}: reference", spec.name(), w.name());
            let mut theirs = reference::run(&python, &script, jobs.path(), w)?;
            if w == Workload::Personalize {
                // One run per process: repeat the pair, alternating sides, so that both see
                // the same machine; the median time and the largest peak count.
                for i in 1..args.iters {
                    println!("  run {} of {}", i + 1, args.iters);
                    let o = spawn(w, spec, args, home)?;
                    let r = reference::run(&python, &script, jobs.path(), w)?;
                    ours.times_seconds.extend(o.times_seconds);
                    ours.peak_rss_kb = ours.peak_rss_kb.max(o.peak_rss_kb);
                    theirs.times_seconds.extend(r.times_seconds);
                    theirs.peak_rss_kb = theirs.peak_rss_kb.max(r.peak_rss_kb);
                }
            }
            let p = pair(spec.name(), w, ours, theirs);
            println!(
                "  ours {:.3} s, reference {:.3} s (ratio {:.2}); peak RSS {} / {} MB",
                p.ours_seconds,
                p.reference_seconds,
                p.time_ratio,
                p.ours_peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}")),
                p.reference_peak_rss_mb
                    .map_or("?".into(), |m| format!("{m:.0}")),
            );
            pairs.push(p);
        }
    }
    let report = Report {
        date,
        machine,
        shape,
        peak,
        pairs,
    };
    std::fs::create_dir_all(&args.out)?;
    let json: PathBuf = args.out.join(format!("vs-reference-{date}.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
    let md = args.out.join("vs-reference.md");
    let text = table(&report);
    std::fs::write(&md, &text)?;
    println!("\n{text}\nwrote {} and {}", json.display(), md.display());
    Ok(())
}
