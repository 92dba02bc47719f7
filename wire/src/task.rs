//! What a client is told when it polls `GET /v1/runs/{run}/task`.
use serde::{Deserialize, Serialize};

/// Tagged by `task`: `{"task":"wait","retry_after_s":5}`,
/// `{"task":"train","round":3,...}`, `{"task":"finished",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Nothing to do now (no round open, not selected, already reported, unseen pool):
    /// poll again after `retry_after_s` seconds (also sent as a `Retry-After` header).
    Wait { retry_after_s: u32 },
    /// Train round k: download φ_k, run stage 1 + stage 2, upload the update.
    Train(TrainTask),
    /// The run is over: φ_R (`round` = R) is the final PSG, e.g. for unseen-pool evaluation.
    Finished(PsgRef),
}

/// A PSG the client can download: `GET psg` answers a `RoundMeta` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsgRef {
    pub round: u32,
    /// Path of the download (`routes::psg`), relative to the server's base URL.
    pub psg: String,
    /// SHA-256 of the download's bytes: verify it, or skip downloading a PSG already held.
    pub psg_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainTask {
    #[serde(flatten)]
    pub psg: PsgRef,
    /// Path to POST the update to (`routes::update`).
    pub upload: String,
    /// Seconds until the round closes; relative, so client and server clocks need not agree.
    pub closes_in_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_round_trip_with_a_tag() -> anyhow::Result<()> {
        let psg = PsgRef {
            round: 3,
            psg: "/v1/runs/r/psg/3".into(),
            psg_sha256: "ab".into(),
        };
        let tasks = [
            Task::Wait { retry_after_s: 5 },
            Task::Train(TrainTask {
                psg: psg.clone(),
                upload: "/v1/runs/r/rounds/3/update".into(),
                closes_in_s: 540,
            }),
            Task::Finished(psg),
        ];
        for t in tasks {
            let v = serde_json::to_value(&t)?;
            assert!(v["task"].is_string(), "{v}");
            assert_eq!(serde_json::from_value::<Task>(v)?, t);
        }
        let train: Task = serde_json::from_str(
            r#"{"task":"train","round":1,"psg":"p","psg_sha256":"h","upload":"u","closes_in_s":9}"#,
        )?;
        assert!(matches!(
            train,
            Task::Train(TrainTask { closes_in_s: 9, .. })
        ));
        assert!(serde_json::from_str::<Task>(r#"{"task":"dance"}"#).is_err());
        Ok(())
    }
}
