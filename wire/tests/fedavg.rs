//! FedAvg against hand-computed values (the expected numbers are worked out in the comments;
//! no external reference needed), plus error cases and order independence.
mod common;

use common::*;
use fedp2eft_wire::{fedavg, Error, FedAvgAccumulator, PsgParams, PsgSpec, TensorData};
use proptest::prelude::*;

type R = anyhow::Result<()>;

fn one(values: &[f32]) -> PsgParams {
    let mut p = PsgParams::default();
    let t = TensorData::new(vec![values.len()], values.to_vec()).expect("1-d");
    p.insert("w", t).expect("one tensor");
    p
}

fn values(p: &PsgParams) -> Vec<f32> {
    p.get("w").map(|t| t.data().to_vec()).unwrap_or_default()
}

#[test]
fn two_clients_with_one_and_three_samples() -> R {
    // (1·[1, 2] + 3·[3, 6]) / 4 = [10/4, 20/4] = [2.5, 5.0]
    let (a, b) = (one(&[1.0, 2.0]), one(&[3.0, 6.0]));
    assert_eq!(values(&fedavg(&[(&a, 1), (&b, 3)])?), [2.5, 5.0]);
    Ok(())
}

#[test]
fn three_clients() -> R {
    // n = 2, 3, 5 (Σ 10): (2·[1, -1, 0.5] + 3·[4, 2, 0] + 5·[-2, 0, 1]) / 10
    //   = ([2, -2, 1] + [12, 6, 0] + [-10, 0, 5]) / 10 = [4, 4, 6] / 10 = [0.4, 0.4, 0.6]
    let (a, b, c) = (
        one(&[1.0, -1.0, 0.5]),
        one(&[4.0, 2.0, 0.0]),
        one(&[-2.0, 0.0, 1.0]),
    );
    let avg = fedavg(&[(&a, 2), (&b, 3), (&c, 5)])?;
    // Computed in f64, rounded once: the f32 nearest to 0.4 and 0.6.
    assert_eq!(values(&avg), [0.4f32, 0.4, 0.6]);
    Ok(())
}

#[test]
fn large_sample_counts_keep_full_precision() -> R {
    // n = 10^9 and 3·10^9 (Σ 4·10^9, beyond u32): same weights as 1 and 3 → [2.5, 5.0].
    let (a, b) = (one(&[1.0, 2.0]), one(&[3.0, 6.0]));
    assert_eq!(
        values(&fedavg(&[(&a, 1_000_000_000), (&b, 3_000_000_000)])?),
        [2.5, 5.0]
    );
    // u64::MAX twice: the total overflows u64 but not the accumulator; the mean of equal
    // weights is the midpoint.
    assert_eq!(
        values(&fedavg(&[(&a, u64::MAX), (&b, u64::MAX)])?),
        [2.0, 4.0]
    );
    // One client with 10^12 samples against 1 sample: 1e12·1 + 1·(1 + 2^-20) over 1e12 + 1
    // is 1 + 2^-20/(1e12+1), which rounds to 1.0 in f32.
    let tiny = one(&[1.0 + f32::EPSILON * 8.0, 2.0]);
    assert_eq!(
        values(&fedavg(&[(&a, 1_000_000_000_000), (&tiny, 1)])?),
        [1.0, 2.0]
    );
    Ok(())
}

#[test]
fn a_single_update_is_returned_unchanged() -> R {
    let p = params(&spec(), 4);
    assert!(fedavg(&[(&p, 17)])?.bit_eq(&p));
    Ok(())
}

#[test]
fn errors_empty_zero_total_mismatch_nonfinite() -> R {
    assert_eq!(fedavg(&[]).err(), Some(Error::EmptyAggregate));
    assert_eq!(
        FedAvgAccumulator::new().finish().err(),
        Some(Error::EmptyAggregate)
    );
    let a = one(&[1.0, 2.0]);
    assert_eq!(
        fedavg(&[(&a, 0), (&a, 0)]).err(),
        Some(Error::ZeroTotalSamples { count: 2 })
    );
    // n = 0 alongside others only contributes nothing.
    assert_eq!(
        values(&fedavg(&[(&a, 0), (&one(&[3.0, 4.0]), 2)])?),
        [3.0, 4.0]
    );
    let e = fedavg(&[(&a, 1), (&one(&[1.0, 2.0, 3.0]), 1)]);
    assert!(matches!(e, Err(Error::WrongShape { .. })), "{e:?}");
    let mut renamed = PsgParams::default();
    renamed.insert("v", TensorData::zeros(vec![2])?)?;
    assert!(matches!(
        fedavg(&[(&a, 1), (&renamed, 1)]),
        Err(Error::RenamedTensor { .. })
    ));
    let e = fedavg(&[(&a, 1), (&one(&[1.0, f32::NAN]), 1)]);
    assert!(matches!(e, Err(Error::NonFinite { index: 1, .. })), "{e:?}");
    Ok(())
}

#[test]
fn a_rejected_update_leaves_the_accumulator_unchanged() -> R {
    let spec = PsgSpec::of(&one(&[0.0, 0.0]))?;
    let mut acc = FedAvgAccumulator::with_spec(spec);
    acc.add(&one(&[1.0, 2.0]), 1)?;
    assert!(acc.add(&one(&[100.0, f32::INFINITY]), 1000).is_err());
    assert!(acc.add(&one(&[100.0]), 1000).is_err());
    acc.add(&one(&[3.0, 6.0]), 3)?;
    assert_eq!((acc.count(), acc.total_samples()), (2, 4));
    assert_eq!(values(&acc.finish()?), [2.5, 5.0]);
    Ok(())
}

#[test]
fn with_spec_refuses_the_first_wrong_update_too() -> R {
    let mut acc = FedAvgAccumulator::with_spec(spec());
    assert!(matches!(
        acc.add(&one(&[1.0]), 1),
        Err(Error::RenamedTensor { .. })
    ));
    acc.add(&params(&spec(), 1), 1)?;
    Ok(())
}

fn update_strategy() -> impl Strategy<Value = Vec<(Vec<f32>, u64)>> {
    let value = prop_oneof![-1e3f32..1e3, -1e-3f32..1e-3, Just(0.0f32)];
    prop::collection::vec((prop::collection::vec(value, 6), 1u64..1_000_000), 1..12)
}

proptest! {
    #[test]
    fn accumulation_order_does_not_matter(
        (updates, shuffled) in update_strategy()
            .prop_flat_map(|u| (Just(u.clone()), Just(u).prop_shuffle()))
    ) {
        let run = |us: &[(Vec<f32>, u64)]| -> Result<Vec<f32>, Error> {
            let mut acc = FedAvgAccumulator::new();
            for (v, n) in us {
                acc.add(&one(v), *n)?;
            }
            Ok(values(&acc.finish()?))
        };
        let (a, b) = (run(&updates)?, run(&shuffled)?);
        // f64 sums of f32·u64 terms differ by f64 rounding at most, far below one f32 ulp,
        // so the f32 results agree to within one ulp (a tie at the f32 rounding boundary).
        for (x, y) in a.iter().zip(&b) {
            let ulp = (x.abs().max(y.abs()) * f32::EPSILON).max(f32::MIN_POSITIVE);
            prop_assert!((x - y).abs() <= ulp, "{x} vs {y}");
        }
        // And the mean is a convex combination: within the inputs' range.
        for (i, x) in a.iter().enumerate() {
            let lo = updates.iter().map(|(v, _)| v[i]).fold(f32::INFINITY, f32::min);
            let hi = updates.iter().map(|(v, _)| v[i]).fold(f32::NEG_INFINITY, f32::max);
            prop_assert!(lo <= *x && *x <= hi, "{lo} <= {x} <= {hi}");
        }
    }
}
