//! `fedp2eft reproduce --config FILE`: the paper's experiment, stage by stage — partition →
//! base model (FedAvg, full fine-tuning) → PSG rounds over a loopback aggregation server →
//! FedL2P's nets the same way (when evaluated) → evaluation of every method × budget × seed on the evaluated clients → tables with paired
//! statistics. Each stage keeps its output under `--out`, so a killed run resumes where it
//! stopped (the base and the PSG by round, the evaluation by client × method × budget × seed).
mod base;
pub mod config;
pub mod eval;
mod fedl2p;
mod loopback;
mod partition;
mod psg;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::progress::Bars;
use config::ReproConfig;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StageName {
    Partition,
    Base,
    Psg,
    /// FedL2P's nets (nothing to do unless `fedl2p` is evaluated).
    Fedl2p,
    Eval,
    Report,
}

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// The run's configuration (TOML; see configs/).
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder [default: out/reproduce/<config name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The data set's folder, instead of the config's `data.dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Stop after this stage.
    #[arg(long, value_enum)]
    pub until: Option<StageName>,
}

/// Wall time of each stage, kept across resumptions (seconds spent in this stage in total).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StageTimes {
    pub partition_s: f64,
    pub base_s: f64,
    pub psg_s: f64,
    pub fedl2p_s: f64,
    pub eval_s: f64,
    pub report_s: f64,
}

fn add_time(out: &Path, stage: StageName, s: f64) -> Result<()> {
    let path = out.join("stage-times.json");
    let mut t: StageTimes = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => StageTimes::default(),
    };
    let slot = match stage {
        StageName::Partition => &mut t.partition_s,
        StageName::Base => &mut t.base_s,
        StageName::Psg => &mut t.psg_s,
        StageName::Fedl2p => &mut t.fedl2p_s,
        StageName::Eval => &mut t.eval_s,
        StageName::Report => &mut t.report_s,
    };
    *slot += s;
    write_atomic(&path, &serde_json::to_string_pretty(&t)?)
}

/// The folder belongs to this configuration: written on the first run, compared after. The
/// saved one is read back through the current types first, so that a field added since (with
/// a default that keeps the old behaviour) does not disown a run. A configuration that only
/// grows the evaluation grid (`ReproConfig::trained_part` equal) takes the run over: the cells
/// already evaluated are kept and the new ones added.
fn claim(out: &Path, cfg: &ReproConfig) -> Result<()> {
    let path = out.join("config.json");
    let now = serde_json::to_value(cfg)?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let was: ReproConfig =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if was.trained_part() != cfg.trained_part() {
            bail!(
                "{} holds a run of another configuration (see its config.json): choose another \
                 --out, or delete it to start over",
                out.display()
            );
        }
        eval::stamp_psg_round(out, was.psg.rounds)?;
        if serde_json::to_value(&was)? == now {
            println!("resuming the run in {}", out.display());
            return Ok(());
        }
        if was.psg.rounds != cfg.psg.rounds {
            println!(
                "resuming the run in {} with the PSG at round {} (was {}): the cells that read \
                 the PSG are evaluated anew, every other cell is kept",
                out.display(),
                cfg.psg.rounds,
                was.psg.rounds
            );
        } else {
            println!(
                "resuming the run in {} with a changed evaluation grid (cells already evaluated \
                 are kept)",
                out.display()
            );
        }
    }
    write_atomic(&path, &serde_json::to_string_pretty(&now)?)
}

pub fn run(a: &ReproduceArgs, home: &Path) -> Result<()> {
    let mut cfg = ReproConfig::load(&a.config)?;
    if let Some(d) = &a.data_dir {
        cfg.data.dir = d.clone();
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/reproduce").join(&cfg.name));
    std::fs::create_dir_all(&out)?;
    claim(&out, &cfg)?;
    let bars = Bars::new();
    let until = a.until.unwrap_or(StageName::Report);
    let machine = fedp2eft_core::runtime::flushing();
    println!(
        "run {} → {} (subnormals flushed: {machine})",
        cfg.name,
        out.display()
    );

    let t = Instant::now();
    let bench = partition::run(&cfg, &out)?;
    add_time(&out, StageName::Partition, t.elapsed().as_secs_f64())?;
    if until == StageName::Partition {
        return Ok(());
    }
    let t = Instant::now();
    let lm = base::run(&cfg, home, &bench, &out, &bars)?;
    add_time(&out, StageName::Base, t.elapsed().as_secs_f64())?;
    if until == StageName::Base {
        return Ok(());
    }
    let t = Instant::now();
    let psg = psg::run(&cfg, &bench, &lm, &out, &bars)?;
    add_time(&out, StageName::Psg, t.elapsed().as_secs_f64())?;
    if until == StageName::Psg {
        return Ok(());
    }
    let t = Instant::now();
    let nets = fedl2p::run(&cfg, &bench, &lm, &out, &bars)?;
    add_time(&out, StageName::Fedl2p, t.elapsed().as_secs_f64())?;
    if until == StageName::Fedl2p {
        return Ok(());
    }
    let t = Instant::now();
    eval::run(&cfg, &bench, &lm, &psg, &nets, &out, &bars)?;
    add_time(&out, StageName::Eval, t.elapsed().as_secs_f64())?;
    if until == StageName::Eval {
        return Ok(());
    }
    let t = Instant::now();
    report::run(&cfg, &out)?;
    add_time(&out, StageName::Report, t.elapsed().as_secs_f64())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_may_grow_its_grid_and_psg_rounds_but_not_change_what_it_trained() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let parse = |extra: &str| -> Result<ReproConfig> {
            let text = format!("name = \"x\"\n[data]\nset = \"masakhanews\"\ndir = \"d\"\n{extra}");
            Ok(toml::from_str(&text)?)
        };
        claim(dir.path(), &parse("")?)?;
        claim(dir.path(), &parse("")?)?;
        let grown = parse("[eval]\nmethods = [\"lora\", \"fedp2eft-tuned\"]\n")?;
        claim(dir.path(), &grown)?;
        let saved: ReproConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json"))?)?;
        assert_eq!(saved, grown, "the grown grid is saved");
        // The PSG may train on; another PSG may not take the run over.
        let longer =
            parse("[eval]\nmethods = [\"lora\", \"fedp2eft-tuned\"]\n[psg]\nrounds = 300\n")?;
        claim(dir.path(), &longer)?;
        match claim(dir.path(), &parse("[psg]\nr_max = 8\n")?) {
            Err(e) => assert!(e.to_string().contains("another configuration"), "{e}"),
            Ok(()) => panic!("another PSG took the run over"),
        }
        Ok(())
    }
}
