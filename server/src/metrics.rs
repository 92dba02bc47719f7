//! Prometheus text-format metrics, by hand: a few atomic counters (per process, since start)
//! and gauges read from the store at scrape time (so they are right after a restart and, later,
//! across processes). No metrics crate: the format is four line shapes.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use fedp2eft_wire::ErrorCode;

use crate::store::{RoundOutcome, RoundRecord, RunRecord};

#[derive(Debug, Default)]
pub struct Metrics {
    uploads_accepted: AtomicU64,
    uploads_duplicate: AtomicU64,
    /// Indexed like `ErrorCode::ALL`.
    uploads_rejected: [AtomicU64; ErrorCode::ALL.len()],
    rounds_aggregated: AtomicU64,
    rounds_failed: AtomicU64,
    round_closes_started: AtomicU64,
}

/// Current state of one running run, for the gauges.
#[derive(Debug, Clone)]
pub struct RunGauges {
    pub run: RunRecord,
    pub round: Option<RoundRecord>,
}

impl Metrics {
    pub fn upload_accepted(&self, duplicate: bool) {
        let counter = if duplicate {
            &self.uploads_duplicate
        } else {
            &self.uploads_accepted
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upload_rejected(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.uploads_rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn round_closed(&self, outcome: RoundOutcome) {
        let counter = match outcome {
            RoundOutcome::Aggregated => &self.rounds_aggregated,
            RoundOutcome::Failed => &self.rounds_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// This process took a round's lock and began to finish it (aggregate, or carry phi over).
    pub fn round_close_started(&self) {
        self.round_closes_started.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text: counters, then gauges of the running runs.
    pub fn render(&self, runs: &[RunGauges]) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        header(
            &mut out,
            "fedp2eft_uploads_accepted_total",
            "counter",
            "Updates stored (first upload of a client in a round).",
        );
        let _ = writeln!(
            out,
            "fedp2eft_uploads_accepted_total {}",
            get(&self.uploads_accepted)
        );
        header(
            &mut out,
            "fedp2eft_uploads_duplicate_total",
            "counter",
            "Repeated identical uploads answered as duplicates (not counted again).",
        );
        let _ = writeln!(
            out,
            "fedp2eft_uploads_duplicate_total {}",
            get(&self.uploads_duplicate)
        );
        header(
            &mut out,
            "fedp2eft_uploads_rejected_total",
            "counter",
            "Uploads refused, by error code.",
        );
        for (code, counter) in ErrorCode::ALL.iter().zip(&self.uploads_rejected) {
            let _ = writeln!(
                out,
                "fedp2eft_uploads_rejected_total{{code=\"{code}\"}} {}",
                get(counter)
            );
        }
        header(
            &mut out,
            "fedp2eft_rounds_completed_total",
            "counter",
            "Rounds closed by this process, by outcome.",
        );
        let _ = writeln!(
            out,
            "fedp2eft_rounds_completed_total{{outcome=\"aggregated\"}} {}",
            get(&self.rounds_aggregated)
        );
        let _ = writeln!(
            out,
            "fedp2eft_rounds_completed_total{{outcome=\"failed\"}} {}",
            get(&self.rounds_failed)
        );
        header(
            &mut out,
            "fedp2eft_round_closes_started_total",
            "counter",
            "Rounds this process began to finish (aggregate or carry phi over) under the round's \
             lock. Summed over processes it equals the rounds closed, unless a closer died.",
        );
        let _ = writeln!(
            out,
            "fedp2eft_round_closes_started_total {}",
            get(&self.round_closes_started)
        );
        header(
            &mut out,
            "fedp2eft_runs_running",
            "gauge",
            "Runs with rounds still to go.",
        );
        let _ = writeln!(out, "fedp2eft_runs_running {}", runs.len());
        header(
            &mut out,
            "fedp2eft_run_current_round",
            "gauge",
            "The round each running run is in (0-based).",
        );
        for g in runs {
            let _ = writeln!(
                out,
                "fedp2eft_run_current_round{{run=\"{}\"}} {}",
                g.run.id, g.run.current_round
            );
        }
        header(
            &mut out,
            "fedp2eft_round_selected_clients",
            "gauge",
            "Clients selected for each running run's current round.",
        );
        for g in runs {
            let selected = g.round.as_ref().map_or(0, |r| r.selected);
            let _ = writeln!(
                out,
                "fedp2eft_round_selected_clients{{run=\"{}\"}} {selected}",
                g.run.id
            );
        }
        header(
            &mut out,
            "fedp2eft_round_reported_clients",
            "gauge",
            "Updates stored so far in each running run's current round.",
        );
        for g in runs {
            let reported = g.round.as_ref().map_or(0, |r| r.reported);
            let _ = writeln!(
                out,
                "fedp2eft_round_reported_clients{{run=\"{}\"}} {reported}",
                g.run.id
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunState;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.upload_accepted(false);
        m.upload_accepted(false);
        m.upload_accepted(true);
        m.upload_rejected(ErrorCode::InvalidUpdate);
        m.round_closed(RoundOutcome::Aggregated);
        let run = RunRecord {
            id: "xnli".into(),
            config: "{}".into(),
            seed: 1,
            state: RunState::Running,
            current_round: 3,
            created_at: 0,
        };
        let text = m.render(&[RunGauges { run, round: None }]);
        assert!(
            text.contains("fedp2eft_uploads_accepted_total 2\n"),
            "{text}"
        );
        assert!(text.contains("fedp2eft_uploads_duplicate_total 1\n"));
        assert!(text.contains("fedp2eft_uploads_rejected_total{code=\"invalid_update\"} 1\n"));
        assert!(text.contains("fedp2eft_uploads_rejected_total{code=\"unauthorized\"} 0\n"));
        assert!(text.contains("fedp2eft_rounds_completed_total{outcome=\"aggregated\"} 1\n"));
        assert!(text.contains("fedp2eft_run_current_round{run=\"xnli\"} 3\n"));
        assert!(text.contains("# TYPE fedp2eft_runs_running gauge\n"));
    }
}
