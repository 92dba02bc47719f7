//! Enrolling a client into a run (admin): the server answers with the client's bearer token,
//! once; it keeps only a hash of it, so a lost token means enrolling under a new id.
use serde::{Deserialize, Serialize};

use crate::{check_id, Result};

/// Which pool a client belongs to. Only seen-pool clients are ever selected for training;
/// unseen-pool clients only download the final PSG (method.md §3.4, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    Seen,
    Unseen,
}

/// `POST /v1/runs/{run}/clients` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    pub client: String,
    pub pool: Pool,
}

impl Enroll {
    pub fn validate(&self) -> Result<()> {
        check_id("client", &self.client)
    }
}

/// Answer to `Enroll`: the only time the token is ever shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub run: String,
    pub client: String,
    pub pool: Pool,
    /// Sent back as `Authorization: Bearer <token>` on every client request.
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enroll_round_trips_and_rejects_unknown_fields() -> anyhow::Result<()> {
        let e = Enroll {
            client: "c12".into(),
            pool: Pool::Unseen,
        };
        let json = serde_json::to_string(&e)?;
        assert_eq!(json, r#"{"client":"c12","pool":"unseen"}"#);
        assert_eq!(serde_json::from_str::<Enroll>(&json)?, e);
        assert!(serde_json::from_str::<Enroll>(r#"{"client":"c","pol":"seen"}"#).is_err());
        assert!(serde_json::from_str::<Enroll>(r#"{"client":"c","pool":"other"}"#).is_err());
        let extra = r#"{"client":"c","pool":"seen","weight":2}"#;
        assert!(serde_json::from_str::<Enroll>(extra).is_err());
        assert!(Enroll {
            client: "../x".into(),
            pool: Pool::Seen
        }
        .validate()
        .is_err());
        let done = Enrolled {
            run: "r".into(),
            client: "c12".into(),
            pool: Pool::Seen,
            token: "t".into(),
        };
        let back: Enrolled = serde_json::from_str(&serde_json::to_string(&done)?)?;
        assert_eq!(back, done);
        Ok(())
    }
}
