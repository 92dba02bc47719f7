//! Budget pruning: keep the r·L largest λ̂ over ALL layers (heterogeneous ranks per layer,
//! layers left with none lose their adapter), keeping the kept values as frozen λ.
use serde::Serialize;

use crate::{Error, Result};

/// The rank structure chosen for one budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankPlan {
    pub budget: usize,
    pub r_max: usize,
    /// Kept rank indices per layer, ascending (the order A rows / B columns keep).
    pub keep: Vec<Vec<usize>>,
    /// λ̂ of the kept ranks, per layer, same order.
    pub lambda: Vec<Vec<f32>>,
}

impl RankPlan {
    pub fn ranks_per_layer(&self) -> Vec<usize> {
        self.keep.iter().map(Vec::len).collect()
    }
    pub fn total_rank(&self) -> usize {
        self.keep.iter().map(Vec::len).sum()
    }
    /// Layers that keep an adapter.
    pub fn active_layers(&self) -> usize {
        self.keep.iter().filter(|k| !k.is_empty()).count()
    }
}

/// Global top-(budget·L) of `lambda` (L·r_max values, chunk l = layer l). Ties are broken
/// towards the lower flat index, so the plan is deterministic (torch.topk leaves it open).
pub fn select_top(
    lambda: &[f32],
    num_layers: usize,
    r_max: usize,
    budget: usize,
) -> Result<RankPlan> {
    select_top_by(lambda, lambda, num_layers, r_max, budget)
}

/// Like `select_top`, but ranks by `key` while keeping `lambda`'s values. The BT-LoRA baseline
/// keeps λ clamped to the prior's floor, where most ranks tie; ranking by the raw λ breaks
/// those ties by what training learned instead of by layer order.
pub fn select_top_by(
    key: &[f32],
    lambda: &[f32],
    num_layers: usize,
    r_max: usize,
    budget: usize,
) -> Result<RankPlan> {
    if key.len() != lambda.len() {
        return Err(Error::Mismatch("ranking key and λ differ in length".into()));
    }
    if let Some(i) = key.iter().position(|x| !x.is_finite()) {
        return Err(Error::Data(format!("λ[{i}] is {}", key[i])));
    }
    if budget == 0 || budget > r_max {
        return Err(Error::Budget { budget, r_max });
    }
    if lambda.len() != num_layers * r_max {
        return Err(Error::Mismatch(format!(
            "λ̂ has {} values, L·r_max = {}·{} = {}",
            lambda.len(),
            num_layers,
            r_max,
            num_layers * r_max
        )));
    }
    if let Some(i) = lambda.iter().position(|x| !x.is_finite()) {
        return Err(Error::Data(format!("λ̂[{i}] is {}", lambda[i])));
    }
    let k = budget * num_layers;
    let mut order: Vec<usize> = (0..lambda.len()).collect();
    // Descending by value, ascending index among equals (total order: no NaN left).
    order.sort_by(|&i, &j| key[j].total_cmp(&key[i]).then(i.cmp(&j)));
    let mut chosen = order[..k].to_vec();
    chosen.sort_unstable();
    let mut keep = vec![Vec::new(); num_layers];
    let mut values = vec![Vec::new(); num_layers];
    for i in chosen {
        keep[i / r_max].push(i % r_max);
        values[i / r_max].push(lambda[i]);
    }
    Ok(RankPlan {
        budget,
        r_max,
        keep,
        lambda: values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_global_top_k_with_heterogeneous_ranks() -> Result<()> {
        // L = 3, r_max = 4, budget 1 → k = 3 largest overall: 0.9 (l0 r1), 0.8 (l2 r0), 0.7 (l2 r3).
        let lam = [
            0.1, 0.9, 0.2, 0.3, 0.05, 0.01, 0.02, 0.03, 0.8, 0.4, 0.5, 0.7,
        ];
        let p = select_top(&lam, 3, 4, 1)?;
        assert_eq!(p.keep, vec![vec![1], vec![], vec![0, 3]]);
        assert_eq!(p.lambda, vec![vec![0.9], vec![], vec![0.8, 0.7]]);
        assert_eq!(p.ranks_per_layer(), vec![1, 0, 2]);
        assert_eq!(p.total_rank(), 3);
        assert_eq!(p.active_layers(), 2);
        // Budget 2 → 6 largest.
        let p = select_top(&lam, 3, 4, 2)?;
        assert_eq!(p.keep, vec![vec![1, 3], vec![], vec![0, 1, 2, 3]]);
        Ok(())
    }

    #[test]
    fn ties_break_towards_lower_index_and_full_budget_keeps_all() -> Result<()> {
        let lam = [1.0f32; 8];
        let p = select_top(&lam, 2, 4, 1)?;
        assert_eq!(p.keep, vec![vec![0, 1], vec![]]);
        let p = select_top(&lam, 2, 4, 4)?;
        assert_eq!(p.total_rank(), 8);
        Ok(())
    }

    #[test]
    fn ranking_key_breaks_ties_of_clamped_values() -> Result<()> {
        let clamped = [1e-4f32, 1e-4, 1e-4, 0.5];
        let raw = [-0.3f32, 2e-5, -0.1, 0.5];
        let p = select_top_by(&raw, &clamped, 2, 2, 1)?;
        assert_eq!(p.keep, vec![vec![1], vec![1]]);
        assert_eq!(p.lambda, vec![vec![1e-4], vec![0.5]]);
        Ok(())
    }

    #[test]
    fn rejects_bad_budgets_lengths_and_nan() {
        let lam = [0.5f32; 8];
        assert!(matches!(
            select_top(&lam, 2, 4, 0),
            Err(Error::Budget {
                budget: 0,
                r_max: 4
            })
        ));
        assert!(matches!(
            select_top(&lam, 2, 4, 5),
            Err(Error::Budget {
                budget: 5,
                r_max: 4
            })
        ));
        assert!(matches!(
            select_top(&lam[..7], 2, 4, 1),
            Err(Error::Mismatch(_))
        ));
        let mut bad = lam;
        bad[3] = f32::NAN;
        assert!(matches!(select_top(&bad, 2, 4, 1), Err(Error::Data(_))));
    }
}
