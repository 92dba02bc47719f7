//! Round status and the answer to an accepted upload.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundState {
    /// Accepting updates from its selected clients.
    Open,
    /// Aggregated: φ_{k+1} exists.
    Closed,
    /// The deadline passed with fewer than the quorum of updates; nothing was aggregated.
    Failed,
}

/// `GET /v1/runs/{run}/rounds/{round}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundStatus {
    pub run: String,
    pub round: u32,
    pub state: RoundState,
    /// Clients selected for this round.
    pub selected: u64,
    /// Accepted updates so far (each client counted once).
    pub reported: u64,
    /// Updates needed to aggregate at the deadline (`CreateRun::quorum`).
    pub quorum: u64,
    /// Seconds until the deadline while open; `None` once closed or failed.
    pub closes_in_s: Option<u64>,
    /// SHA-256 of φ_k, the round's input.
    pub psg_sha256: String,
    /// SHA-256 of φ_{k+1} once aggregated.
    pub aggregate_sha256: Option<String>,
}

/// Answer to an upload. A repeated identical upload gets the same answer with
/// `duplicate: true` and is never counted twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadAccepted {
    pub run: String,
    pub round: u32,
    pub client: String,
    /// SHA-256 of the accepted body (`sha256_hex`).
    pub sha256: String,
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_acceptance_round_trip() -> anyhow::Result<()> {
        let s = RoundStatus {
            run: "r".into(),
            round: 2,
            state: RoundState::Open,
            selected: 30,
            reported: 4,
            quorum: 15,
            closes_in_s: Some(100),
            psg_sha256: "aa".into(),
            aggregate_sha256: None,
        };
        let json = serde_json::to_string(&s)?;
        assert!(json.contains(r#""state":"open""#), "{json}");
        assert_eq!(serde_json::from_str::<RoundStatus>(&json)?, s);
        let a = UploadAccepted {
            run: "r".into(),
            round: 2,
            client: "c".into(),
            sha256: "bb".into(),
            duplicate: true,
        };
        assert_eq!(
            serde_json::from_str::<UploadAccepted>(&serde_json::to_string(&a)?)?,
            a
        );
        Ok(())
    }
}
