//! `fedp2eft-server`: reads the configuration from the environment and serves.
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!(
            "fedp2eft-server {}: FedP2EFT federation server (docs/server.md)\n\n\
             Configured by environment variables:\n{}",
            env!("CARGO_PKG_VERSION"),
            fedp2eft_server::config::ENV_HELP
        );
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = match fedp2eft_server::Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fedp2eft-server: {e}\n(see fedp2eft-server --help)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fedp2eft-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fedp2eft_server::serve(
        config,
        fedp2eft_server::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server stopped");
            ExitCode::FAILURE
        }
    }
}
