//! `fedp2eft serve`: the aggregation server (the same as the `fedp2eft-server` binary), and the
//! in-process loopback server `simulate` starts.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fedp2eft_server::{AppState, Config};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Database URL [default: sqlite://<home>/server/fedp2eft.db].
    #[arg(long, env = "FEDP2EFT_DATABASE_URL")]
    pub db: Option<String>,
    /// Admin bearer token (at least 16 characters).
    #[arg(long, env = "FEDP2EFT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
}

pub fn run(a: &ServeArgs, home: &Path) -> Result<()> {
    if a.admin_token.len() < 16 {
        bail!("the admin token must have at least 16 characters");
    }
    let dir = home.join("server");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db =
        a.db.clone()
            .unwrap_or_else(|| Config::default_database_url(&dir));
    let mut config = Config::new(a.admin_token.clone(), db);
    config.bind = a.bind;
    println!("serving on http://{} (ctrl-c to stop)", a.bind);
    tokio::runtime::Runtime::new()?.block_on(fedp2eft_server::serve(
        config,
        fedp2eft_server::shutdown_signal(),
    ))?;
    Ok(())
}

/// A server on 127.0.0.1:<free port> in its own thread; dropping the handle stops it.
pub struct LoopbackServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    pub fn start(admin_token: &str, data_dir: PathBuf) -> Result<Self> {
        let config = Config::new(admin_token, Config::default_database_url(&data_dir));
        let rt = tokio::runtime::Runtime::new()?;
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let tx = addr_tx.clone();
            let res: Result<()> = rt.block_on(async move {
                let state = AppState::connect(config).await?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let _ = tx.send(Ok(listener.local_addr()?));
                let stop = async move {
                    let _ = stop_rx.await;
                };
                fedp2eft_server::serve_on(listener, state, stop).await?;
                Ok(())
            });
            if let Err(e) = res {
                let _ = addr_tx.send(Err(e));
            }
        });
        let addr = addr_rx
            .recv()
            .context("the loopback server thread ended before listening")??;
        Ok(Self {
            url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
