//! Creating a run (admin) and reading its status. A run is created by POSTing the initial PSG
//! φ_0 as a payload whose metadata is a `CreateRun` (`kind: "create_run"`): configuration and
//! parameters arrive in one body, so a run never exists without its PSG.
use serde::{Deserialize, Serialize};

use crate::codec::decode_with;
use crate::{
    check_id, Error, Limits, PayloadMeta, PsgLayout, PsgParams, PsgSpec, Result, PROTOCOL_VERSION,
};

/// Upper bounds that keep a typo (an extra zero) from creating a run that never ends.
pub const MAX_ROUNDS: u32 = 100_000;
pub const MAX_DEADLINE_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    pub protocol: u32,
    /// The run's id in URLs and payloads (see `check_id`).
    pub name: String,
    /// Seeds the server's client sampling, so a run's selections can be reproduced.
    pub seed: u64,
    /// Fraction of enrolled seen-pool clients selected per round, in (0, 1] (paper: 0.1).
    pub fraction: f64,
    /// R: rounds to run; φ_R is the final PSG (paper: 150).
    pub rounds: u32,
    /// Seconds after a round opens at which it closes with whatever has arrived.
    pub deadline_s: u64,
    /// Fraction of the selected clients that must report by the deadline, in (0, 1];
    /// below it the round fails instead of aggregating.
    pub min_completion: f64,
    pub layout: PsgLayout,
    /// How every client of the run regresses the PSG onto its learned λ (absent in a run
    /// created before this field: the authors' values).
    #[serde(default)]
    pub stage2: Stage2,
}

/// Stage 2 of a round as the run prescribes it to its clients (method.md §3.3): Adam steps of
/// the PSG's L1 regression and their learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stage2 {
    /// The authors: 10.
    pub steps: u32,
    /// The authors: 1e-4.
    pub lr: f64,
}

impl Default for Stage2 {
    fn default() -> Self {
        Self {
            steps: 10,
            lr: 1e-4,
        }
    }
}

/// Bounds of a run's stage 2: a typo must not make every client spin for hours.
pub const MAX_STAGE2_STEPS: u32 = 10_000;

impl Stage2 {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_STAGE2_STEPS).contains(&self.steps) {
            let msg = format!("must be 1..={MAX_STAGE2_STEPS}");
            return Err(Error::field("stage2.steps", msg));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            let msg = format!("{} is not in (0, 1]", self.lr);
            return Err(Error::field("stage2.lr", msg));
        }
        Ok(())
    }
}

impl CreateRun {
    /// The current protocol and the paper's values where it has them (fraction 0.1, 150
    /// rounds); deadline and quorum are ours.
    pub fn new(name: impl Into<String>, layout: PsgLayout) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            name: name.into(),
            seed: 0,
            fraction: 0.1,
            rounds: 150,
            deadline_s: 600,
            min_completion: 0.5,
            layout,
            stage2: Stage2::default(),
        }
    }

    /// Every field in range; errors are `InvalidField` (400), the layout's included.
    pub fn validate(&self) -> Result<()> {
        check_id("name", &self.name)?;
        for (field, v) in [
            ("fraction", self.fraction),
            ("min_completion", self.min_completion),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(Error::field(field, format!("{v} is not in (0, 1]")));
            }
        }
        if !(1..=MAX_ROUNDS).contains(&self.rounds) {
            return Err(Error::field("rounds", format!("must be 1..={MAX_ROUNDS}")));
        }
        if !(1..=MAX_DEADLINE_S).contains(&self.deadline_s) {
            let msg = format!("must be 1..={MAX_DEADLINE_S} seconds");
            return Err(Error::field("deadline_s", msg));
        }
        self.stage2.validate()?;
        self.layout.validate().map_err(|e| match e {
            Error::InvalidSpec(reason) => Error::field("layout", reason),
            e => e,
        })
    }

    /// Clients selected per round among `seen` enrolled seen-pool clients:
    /// ⌈fraction · seen⌉ within [1, seen] (0 when none is enrolled). The small tolerance keeps
    /// 0.1 · 300 (= 30.000000000000004 in f64) at 30.
    pub fn clients_per_round(&self, seen: usize) -> usize {
        if seen == 0 {
            return 0;
        }
        ceil_fraction(self.fraction, seen).clamp(1, seen)
    }

    /// Updates needed to aggregate when the deadline passes: ⌈min_completion · selected⌉,
    /// at least 1 (an aggregate of nothing is undefined).
    pub fn quorum(&self, selected: usize) -> usize {
        ceil_fraction(self.min_completion, selected).clamp(1, selected.max(1))
    }

    /// Decodes a run-creation body: the spec comes from its own layout.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(PsgParams, CreateRun)> {
        decode_with(bytes, limits, |m: &CreateRun| {
            m.validate()?;
            m.layout.spec()
        })
    }
}

fn ceil_fraction(f: f64, n: usize) -> usize {
    let x = f * n as f64;
    if x.is_finite() && x > 0.0 {
        (x - 1e-9).ceil() as usize
    } else {
        0
    }
}

impl PayloadMeta for CreateRun {
    const KIND: &'static str = "create_run";

    fn check(&self, _spec: &PsgSpec, _limits: &Limits) -> Result<()> {
        // Bad configuration in a run-creation body is a bad request (400), not a bad update.
        self.validate()
    }
}

/// Answer to a run creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCreated {
    pub run: String,
    /// SHA-256 of φ_0 as the server will serve it for round 0.
    pub psg_sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Rounds are being run; `round` is the current (open or next) round.
    Running,
    /// All rounds done; φ_R is final.
    Finished,
}

/// `GET /v1/runs/{run}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub run: String,
    pub state: RunState,
    pub round: u32,
    pub rounds: u32,
    pub enrolled_seen: u64,
    pub enrolled_unseen: u64,
    pub layout: PsgLayout,
    /// SHA-256 of the newest PSG, φ_round.
    pub psg_sha256: String,
    /// Stage 2 as the run was created with it; clients follow it.
    #[serde(default)]
    pub stage2: Stage2,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> PsgLayout {
        PsgLayout {
            kind: crate::NetKind::Psg,
            hidden: None,
            base_model: "sentence-transformers/all-MiniLM-L6-v2".into(),
            num_layers: 12,
            r_max: 32,
            hidden_mul: 2,
            feature_layout: "mean-sd-interleaved/adapted-linear-input/module-order/v1".into(),
        }
    }

    #[test]
    fn sampling_counts_follow_the_paper() {
        let run = CreateRun::new("xnli", layout());
        assert_eq!(run.clients_per_round(300), 30);
        assert_eq!(run.clients_per_round(160), 16);
        assert_eq!(run.clients_per_round(5), 1);
        assert_eq!(run.clients_per_round(0), 0);
        let all = CreateRun {
            fraction: 1.0,
            ..run.clone()
        };
        assert_eq!(all.clients_per_round(7), 7);
        assert_eq!(run.quorum(30), 15);
        assert_eq!(run.quorum(3), 2);
        assert_eq!(run.quorum(1), 1);
        assert_eq!(run.quorum(0), 1);
    }

    #[test]
    fn stage2_defaults_to_the_authors_and_is_bounded() -> Result<()> {
        // A run stored before the field existed reads with the authors' stage 2.
        let mut json = serde_json::to_value(CreateRun::new("r", layout()))
            .map_err(|e| Error::field("json", e.to_string()))?;
        if let Some(o) = json.as_object_mut() {
            o.remove("stage2");
        }
        let old: CreateRun =
            serde_json::from_value(json).map_err(|e| Error::field("json", e.to_string()))?;
        assert_eq!(
            old.stage2,
            Stage2 {
                steps: 10,
                lr: 1e-4
            }
        );
        for (bad, field) in [
            (Stage2 { steps: 0, lr: 1e-4 }, "stage2.steps"),
            (
                Stage2 {
                    steps: MAX_STAGE2_STEPS + 1,
                    lr: 1e-4,
                },
                "stage2.steps",
            ),
            (
                Stage2 {
                    steps: 10,
                    lr: f64::NAN,
                },
                "stage2.lr",
            ),
            (Stage2 { steps: 10, lr: 0.0 }, "stage2.lr"),
        ] {
            let run = CreateRun {
                stage2: bad,
                ..CreateRun::new("r", layout())
            };
            let e = run
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(field), "{e}");
        }
        Ok(())
    }

    #[test]
    fn out_of_range_configuration_is_a_bad_request() {
        let ok = CreateRun::new("r", layout());
        assert!(ok.validate().is_ok());
        let cases: Vec<(CreateRun, &str)> = vec![
            (
                CreateRun {
                    name: "a/b".into(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                CreateRun {
                    fraction: 0.0,
                    ..ok.clone()
                },
                "fraction",
            ),
            (
                CreateRun {
                    fraction: f64::NAN,
                    ..ok.clone()
                },
                "fraction",
            ),
            (
                CreateRun {
                    min_completion: 1.5,
                    ..ok.clone()
                },
                "min_completion",
            ),
            (
                CreateRun {
                    rounds: 0,
                    ..ok.clone()
                },
                "rounds",
            ),
            (
                CreateRun {
                    deadline_s: 0,
                    ..ok.clone()
                },
                "deadline_s",
            ),
        ];
        for (run, field) in cases {
            let e = run.validate();
            assert!(
                matches!(e, Err(Error::InvalidField { field: f, .. }) if f == field),
                "{field}: {e:?}"
            );
            assert_eq!(e.err().map(|e| e.code().http_status()), Some(400));
        }
        let mut bad = ok.clone();
        bad.layout.r_max = 0;
        assert!(matches!(
            bad.validate(),
            Err(Error::InvalidField {
                field: "layout",
                ..
            })
        ));
    }

    #[test]
    fn json_round_trips_and_rejects_typos() -> anyhow::Result<()> {
        let run = CreateRun::new("r", layout());
        let json = serde_json::to_string(&run)?;
        assert_eq!(serde_json::from_str::<CreateRun>(&json)?, run);
        let typo = json.replace("\"min_completion\"", "\"min_completeness\"");
        assert!(serde_json::from_str::<CreateRun>(&typo).is_err());
        let layout_typo = json.replace("\"r_max\"", "\"rmax\"");
        assert!(serde_json::from_str::<CreateRun>(&layout_typo).is_err());
        Ok(())
    }
}
