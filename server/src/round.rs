//! The round state machine's decisions as plain functions: who trains in round k, when a round
//! closes, and whether what arrived is enough to aggregate. No I/O, so every rule is unit-tested
//! here; `coordinator` applies them to the store.
use rand::seq::index;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::store::{CloseReason, RoundOutcome, RoundRecord, RoundState};

/// The `count` clients selected for `round` (count from `CreateRun::clients_per_round`):
/// uniform without replacement from the seen pool (ids in ascending order), drawn from a
/// ChaCha20 stream keyed by the run's seed and the round number — so the selection of any
/// round can be re-derived, independently of the other rounds. Returned in ascending order.
pub fn select_clients(seed: u64, round: u32, seen: &[String], count: usize) -> Vec<String> {
    let m = count.min(seen.len());
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(u64::from(round));
    let mut picked: Vec<usize> = index::sample(&mut rng, seen.len(), m).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| seen[i].clone()).collect()
}

/// Whether an open round should close now, and why. Closes as soon as every selected client
/// reported; otherwise at the deadline, whatever arrived.
pub fn close_reason(round: &RoundRecord, now_ms: i64) -> Option<CloseReason> {
    if round.state != RoundState::Open {
        return None;
    }
    if round.selected > 0 && round.reported >= round.selected {
        Some(CloseReason::AllReported)
    } else if now_ms >= round.deadline_at {
        Some(CloseReason::Deadline)
    } else {
        None
    }
}

/// Aggregate iff at least `quorum` (`CreateRun::quorum`) updates arrived, and at least one did;
/// otherwise the round fails and phi carries over unchanged.
pub fn outcome(reported: u32, quorum: usize) -> RoundOutcome {
    if reported > 0 && reported as usize >= quorum {
        RoundOutcome::Aggregated
    } else {
        RoundOutcome::Failed
    }
}

/// Deadline of a round opened at `opened_at_ms`.
pub fn deadline(opened_at_ms: i64, deadline_secs: u64) -> i64 {
    let secs = i64::try_from(deadline_secs).unwrap_or(i64::MAX / 1000);
    opened_at_ms.saturating_add(secs.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i:03}")).collect()
    }

    fn open_round(selected: u32, reported: u32, deadline_at: i64) -> RoundRecord {
        RoundRecord {
            run_id: "r".into(),
            round: 1,
            state: RoundState::Open,
            opened_at: 0,
            deadline_at,
            closing_at: None,
            closed_at: None,
            close_reason: None,
            selected,
            reported,
            total_samples: 0,
        }
    }

    #[test]
    fn selection_is_reproducible_and_differs_by_round() {
        let seen = ids(300);
        let a = select_clients(7, 1, &seen, 30);
        assert_eq!(a, select_clients(7, 1, &seen, 30));
        assert_eq!(a.len(), 30);
        let mut dedup = a.clone();
        dedup.dedup();
        assert_eq!(dedup, a, "without replacement, sorted");
        assert_ne!(a, select_clients(7, 2, &seen, 30));
        assert_ne!(a, select_clients(8, 1, &seen, 30));
    }

    #[test]
    fn selection_is_pinned() {
        // Pinned so a dependency upgrade that changes the stream (and so which clients a
        // restarted server would re-derive) fails loudly.
        let seen = ids(10);
        let picked = select_clients(42, 1, &seen, 3);
        assert_eq!(picked.len(), 3);
        assert_eq!(
            picked,
            PINNED_42_1
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
    }
    const PINNED_42_1: [&str; 3] = ["c000", "c002", "c004"];

    #[test]
    fn everyone_when_fraction_is_one() {
        let seen = ids(3);
        assert_eq!(select_clients(1, 5, &seen, 3), seen);
        assert!(select_clients(1, 5, &[], 3).is_empty());
    }

    #[test]
    fn closes_when_all_reported_or_at_deadline() {
        assert_eq!(close_reason(&open_round(3, 2, 100), 99), None);
        assert_eq!(
            close_reason(&open_round(3, 3, 100), 0),
            Some(CloseReason::AllReported)
        );
        assert_eq!(
            close_reason(&open_round(3, 1, 100), 100),
            Some(CloseReason::Deadline)
        );
        let mut closing = open_round(3, 3, 100);
        closing.state = RoundState::Closing;
        assert_eq!(close_reason(&closing, 1000), None);
    }

    #[test]
    fn outcome_needs_the_quorum() {
        assert_eq!(outcome(3, 3), RoundOutcome::Aggregated);
        assert_eq!(outcome(2, 3), RoundOutcome::Failed);
        assert_eq!(outcome(5, 5), RoundOutcome::Aggregated);
        assert_eq!(outcome(4, 5), RoundOutcome::Failed);
        assert_eq!(outcome(0, 0), RoundOutcome::Failed, "nothing to average");
    }

    #[test]
    fn deadline_saturates() {
        assert_eq!(deadline(1_000, 60), 61_000);
        assert_eq!(deadline(i64::MAX - 5, 60), i64::MAX);
        assert_eq!(deadline(0, u64::MAX), (i64::MAX / 1000) * 1000);
    }
}
