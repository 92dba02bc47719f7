//! Running the server: resume what a previous process left, check deadlines in the
//! background, serve until a shutdown signal, then drain in-flight requests.
use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::close::sweep;
use crate::state::now_ms;
use crate::{app, AppState, Config};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects to the configured store, binds the configured address and serves until
/// `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = config.bind;
    let state = AppState::connect(config).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_on(listener, state, shutdown).await
}

/// Serves `state` on an already bound listener (tests bind port 0 and read the address).
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Before the first request: close rounds whose deadline passed while no server ran, and
    // finish closes a killed process left half done.
    sweep(&state, now_ms()).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let deadlines = tokio::spawn(deadline_task(state.clone(), stop_rx));
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
        })
        .await;
    // Let a sweep in progress finish its transaction rather than abort it.
    let _ = stop_tx.send(true);
    let _ = deadlines.await;
    Ok(result?)
}

async fn deadline_task(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.deadline_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => sweep(&state, now_ms()).await,
            _ = stop.changed() => return,
        }
    }
}

/// Resolves on ctrl-c or, on Unix, SIGTERM (what service managers and `docker stop` send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
