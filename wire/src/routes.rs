//! The API's paths, as axum route patterns (for the server) and as builders (for the client),
//! so both sides use the same strings. Run names and client ids are `check_id`-clean, so the
//! builders need no escaping. Auth: `Authorization: Bearer <token>`, the admin token on
//! `CREATE_RUN` and `ENROLL`, a client's token on `TASK`, `PSG` and `UPDATE`.

/// Content type of safetensors payloads (uploads, downloads, run creation).
pub const PAYLOAD_CONTENT_TYPE: &str = "application/octet-stream";

/// `POST`, body: `CreateRun` payload → 201 `RunCreated`.
pub const CREATE_RUN: &str = "/v1/runs";
/// `GET` → `RunStatus`.
pub const RUN: &str = "/v1/runs/{run}";
/// `POST`, JSON `Enroll` → 201 `Enrolled`.
pub const ENROLL: &str = "/v1/runs/{run}/clients";
/// `GET` → `Task`.
pub const TASK: &str = "/v1/runs/{run}/task";
/// `GET` → the `RoundMeta` payload of φ_k (k = 0 is the initial PSG, k = R the final one).
pub const PSG: &str = "/v1/runs/{run}/psg/{round}";
/// `GET` → `RoundStatus`.
pub const ROUND: &str = "/v1/runs/{run}/rounds/{round}";
/// `POST`, body: `UpdateMeta` payload → `UploadAccepted`.
pub const UPDATE: &str = "/v1/runs/{run}/rounds/{round}/update";

pub fn run(run: &str) -> String {
    RUN.replace("{run}", run)
}

pub fn enroll(run: &str) -> String {
    ENROLL.replace("{run}", run)
}

pub fn task(run: &str) -> String {
    TASK.replace("{run}", run)
}

pub fn psg(run: &str, round: u32) -> String {
    PSG.replace("{run}", run)
        .replace("{round}", &round.to_string())
}

pub fn round(run: &str, round: u32) -> String {
    ROUND
        .replace("{run}", run)
        .replace("{round}", &round.to_string())
}

pub fn update(run: &str, round: u32) -> String {
    UPDATE
        .replace("{run}", run)
        .replace("{round}", &round.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::API_PREFIX;

    #[test]
    fn paths_are_versioned_and_filled() {
        for p in [CREATE_RUN, RUN, ENROLL, TASK, PSG, ROUND, UPDATE] {
            assert!(p.starts_with(&format!("{API_PREFIX}/")), "{p}");
        }
        assert_eq!(psg("xnli", 3), "/v1/runs/xnli/psg/3");
        assert_eq!(update("xnli", 0), "/v1/runs/xnli/rounds/0/update");
        assert_eq!(round("r", 7), "/v1/runs/r/rounds/7");
        assert_eq!(task("r"), "/v1/runs/r/task");
        assert_eq!(enroll("r"), "/v1/runs/r/clients");
        assert_eq!(run("r"), "/v1/runs/r");
    }
}
