//! `AppState`: what every handler shares. Cheap to clone (a few `Arc`s); holds no round state,
//! which lives in the store only, so a restarted server (or, later, a second process) sees
//! exactly what the first one committed.
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::hash_token;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{self, Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of the admin token, computed once.
    pub(crate) admin_token_hash: [u8; 32],
}

impl AppState {
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        Self {
            admin_token_hash: hash_token(&config.admin_token),
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Opens the configured database (creating a SQLite file's directory if needed).
    pub async fn connect(config: Config) -> store::Result<Self> {
        if let Some(dir) = config.sqlite_dir() {
            std::fs::create_dir_all(dir)?;
        }
        let store = store::connect(&config.database_url).await?;
        Ok(Self::new(config, store))
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: it holds the admin token.
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds since the Unix epoch: round deadlines are stored as such, so they
/// survive restarts.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
