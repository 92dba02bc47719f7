//! Property tests of the codec: random payloads round trip bit-exactly; random corruption of
//! a valid upload never panics and either decodes to a valid value or is an error.
mod common;

use common::*;
use fedp2eft_wire::{Limits, PsgParams, PsgSpec, TensorData, UpdateMeta};
use proptest::prelude::*;

fn finite() -> impl Strategy<Value = f32> {
    use proptest::num::f32::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    (POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO).prop_filter("finite", |v| v.is_finite())
}

fn payload() -> impl Strategy<Value = (PsgParams, UpdateMeta)> {
    let id = "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}";
    let shapes = prop::collection::btree_map(
        "[a-z][a-z0-9_.]{0,12}",
        prop::collection::vec(0usize..5, 0..4),
        1..5,
    );
    let tensors = shapes.prop_flat_map(|m| {
        m.into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product::<usize>();
                prop::collection::vec(finite(), n)
                    .prop_map(move |d| (name.clone(), shape.clone(), d))
            })
            .collect::<Vec<_>>()
    });
    let meta = (id, any::<u32>(), id, 1u64..=1_000_000_000)
        .prop_map(|(r, k, c, n)| UpdateMeta::new(r, k, c, n));
    (tensors, meta).prop_map(|(ts, meta)| {
        let mut p = PsgParams::default();
        for (name, shape, data) in ts {
            p.insert(name, TensorData::new(shape, data).expect("sized"))
                .expect("unique");
        }
        (p, meta)
    })
}

proptest! {
    #[test]
    fn random_payloads_round_trip_exactly((p, meta) in payload()) {
        let spec = PsgSpec::of(&p)?;
        let bytes = p.encode(&meta)?;
        let (back, m) = PsgParams::decode::<UpdateMeta>(&bytes, &spec, &Limits::default())?;
        prop_assert!(back.bit_eq(&p));
        prop_assert_eq!(m, meta);
    }

    #[test]
    fn corrupted_uploads_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let spec = spec();
        let mut bytes = params(&spec, 1).encode(&update(100))?;
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        let limits = Limits::default();
        if let Ok((p, meta)) = PsgParams::decode::<UpdateMeta>(&bytes, &spec, &limits) {
            // Whatever gets through is a valid update.
            prop_assert!(spec.check(&p).is_ok());
            prop_assert!(p.check_finite().is_ok());
            prop_assert!(meta.num_samples >= 1 && meta.num_samples <= limits.max_num_samples);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = PsgParams::decode::<UpdateMeta>(&bytes, &spec(), &Limits::default());
    }
}
