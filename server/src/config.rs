//! Server configuration, read from `FEDP2EFT_*` environment variables (what containers and
//! service managers pass most easily); embedders such as the CLI build a `Config` directly.
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Every variable the server reads, with what it sets: printed by `fedp2eft-server --help`.
pub const ENV_HELP: &str = "\
FEDP2EFT_ADMIN_TOKEN        admin bearer token (required, at least 16 characters)
FEDP2EFT_BIND               listen address (default 127.0.0.1:8080)
FEDP2EFT_DATABASE_URL       database URL (default sqlite://<FEDP2EFT_DATA_DIR>/fedp2eft.db), or
                            postgres://USER:PASSWORD@HOST:PORT/DB to let several server
                            processes share one database; DATABASE_URL is read when unset
FEDP2EFT_DATA_DIR           directory of the default SQLite database (default ./fedp2eft-data)
FEDP2EFT_MAX_BODY_BYTES     largest request body, bytes (default 268435456 = 256 MiB)
FEDP2EFT_DEADLINE_CHECK_MS  how often round deadlines are checked (default 1000)
FEDP2EFT_RETRY_AFTER_S      poll interval suggested to waiting clients (default 5)
RUST_LOG                    log filter (default info)";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Loopback by default: exposing the server is a deliberate choice (TLS belongs in a
    /// reverse proxy in front of it).
    pub bind: SocketAddr,
    /// `sqlite://PATH` (created if missing, WAL), `sqlite::memory:` for tests, or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (shared by several server processes).
    pub database_url: String,
    /// Guards run creation and enrolment. Never logged.
    pub admin_token: String,
    /// Largest request body accepted at all; each run's payloads are further limited to what
    /// its PSG layout needs (wire's `Limits::for_spec`). Default: wire's default limit, enough
    /// for a Llama-3.2-3B PSG.
    pub max_body_bytes: usize,
    /// Period of the background task that closes rounds whose deadline passed. Deadlines are
    /// whole seconds, so one second keeps a round at most ~1 s past its deadline.
    pub deadline_check: Duration,
    /// Poll interval suggested to clients told to wait (`Task::Wait`, `Retry-After`).
    pub retry_after_s: u32,
}

impl Config {
    /// A configuration with defaults and the given admin token and database.
    pub fn new(admin_token: impl Into<String>, database_url: impl Into<String>) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: database_url.into(),
            admin_token: admin_token.into(),
            max_body_bytes: fedp2eft_wire::Limits::default().max_bytes,
            deadline_check: Duration::from_secs(1),
            retry_after_s: 5,
        }
    }

    pub fn default_database_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("fedp2eft.db").display())
    }

    /// Reads the environment through `var` (a parameter, so tests need not mutate the
    /// process environment).
    pub fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let admin_token = var("FEDP2EFT_ADMIN_TOKEN")
            .ok_or("FEDP2EFT_ADMIN_TOKEN is not set: the admin API needs a token")?;
        if admin_token.trim().len() < 16 {
            return Err("FEDP2EFT_ADMIN_TOKEN must be at least 16 characters".into());
        }
        let data_dir = var("FEDP2EFT_DATA_DIR").unwrap_or_else(|| "fedp2eft-data".into());
        let database_url = var("FEDP2EFT_DATABASE_URL")
            .or_else(|| var("DATABASE_URL"))
            .unwrap_or_else(|| Self::default_database_url(Path::new(&data_dir)));
        let mut config = Self::new(admin_token.trim(), database_url);
        if let Some(bind) = var("FEDP2EFT_BIND") {
            config.bind = parse("FEDP2EFT_BIND", &bind)?;
        }
        if let Some(v) = var("FEDP2EFT_MAX_BODY_BYTES") {
            config.max_body_bytes = parse("FEDP2EFT_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = var("FEDP2EFT_DEADLINE_CHECK_MS") {
            let ms: u64 = parse("FEDP2EFT_DEADLINE_CHECK_MS", &v)?;
            config.deadline_check = Duration::from_millis(ms.max(10));
        }
        if let Some(v) = var("FEDP2EFT_RETRY_AFTER_S") {
            config.retry_after_s = parse("FEDP2EFT_RETRY_AFTER_S", &v)?;
        }
        Ok(config)
    }

    pub fn from_env() -> Result<Self, String> {
        Self::from_env_with(|k| std::env::var(k).ok())
    }

    /// The directory a `sqlite://PATH` URL's file lives in (to create it before connecting).
    pub fn sqlite_dir(&self) -> Option<&Path> {
        let path = self.database_url.strip_prefix("sqlite://")?;
        let path = path.split('?').next()?;
        Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| format!("{name}={value:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_and_overrides() -> Result<(), String> {
        let c = Config::from_env_with(env(&[("FEDP2EFT_ADMIN_TOKEN", "0123456789abcdef")]))?;
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://fedp2eft-data/fedp2eft.db");
        assert_eq!(c.sqlite_dir(), Some(Path::new("fedp2eft-data")));
        let c = Config::from_env_with(env(&[
            ("FEDP2EFT_ADMIN_TOKEN", "0123456789abcdef"),
            ("FEDP2EFT_BIND", "0.0.0.0:9000"),
            ("DATABASE_URL", "sqlite:///var/lib/f/x.db?mode=rwc"),
            ("FEDP2EFT_MAX_BODY_BYTES", "1024"),
            ("FEDP2EFT_DEADLINE_CHECK_MS", "250"),
        ]))?;
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.sqlite_dir(), Some(Path::new("/var/lib/f")));
        assert_eq!(c.max_body_bytes, 1024);
        assert_eq!(c.deadline_check, Duration::from_millis(250));
        Ok(())
    }

    #[test]
    fn refuses_missing_or_short_admin_token_and_bad_numbers() {
        assert!(Config::from_env_with(env(&[])).is_err());
        assert!(Config::from_env_with(env(&[("FEDP2EFT_ADMIN_TOKEN", "short")])).is_err());
        let bad = env(&[
            ("FEDP2EFT_ADMIN_TOKEN", "0123456789abcdef"),
            ("FEDP2EFT_MAX_BODY_BYTES", "lots"),
        ]);
        assert!(Config::from_env_with(bad).is_err());
    }
}
