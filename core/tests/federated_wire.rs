//! The PSG through the wire format: encode → decode → the same PSG, and FedAvg of two client
//! PSGs equals the sample-weighted mean of their parameters computed by hand.
use fedp2eft_core::federated::convert::{from_params, layout, to_params};
use fedp2eft_core::psg::{Psg, PsgConfig, PsgMeta, FEATURE_LAYOUT};
use fedp2eft_wire::{fedavg, Limits, PsgParams, UpdateMeta};

fn psg(seed: u64) -> anyhow::Result<Psg> {
    let meta = PsgMeta {
        base_model: "test-model|L3".into(),
        num_layers: 3,
        r_max: 4,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    // Visible weights, so averaging is checked on real numbers.
    let cfg = PsgConfig {
        init_gain: 1.0,
        ..Default::default()
    };
    Ok(Psg::new(meta, cfg, seed)?)
}

#[test]
fn a_psg_survives_the_wire_unchanged() -> anyhow::Result<()> {
    let p = psg(1)?;
    let lay = layout(&p);
    let spec = lay.spec()?;
    let bytes = to_params(&p)?.encode(&UpdateMeta::new("run-1", 0, "c1", 66))?;
    let (params, meta): (PsgParams, UpdateMeta) =
        PsgParams::decode(&bytes, &spec, &Limits::for_spec(&spec))?;
    assert_eq!((meta.num_samples, meta.client.as_str()), (66, "c1"));
    let back = from_params(&lay, PsgConfig::default(), &params)?;
    let x: Vec<f32> = (0..6).map(|i| i as f32 * 0.3 - 0.5).collect();
    assert_eq!(p.predict(&x)?, back.predict(&x)?);
    Ok(())
}

#[test]
fn fedavg_of_two_psgs_is_their_weighted_mean() -> anyhow::Result<()> {
    let (a, b) = (psg(1)?, psg(2)?);
    let (pa, pb) = (to_params(&a)?, to_params(&b)?);
    let avg = fedavg(&[(&pa, 1), (&pb, 3)])?;
    for (name, t) in avg.iter() {
        let (x, y) = (pa.get(name).expect("a"), pb.get(name).expect("b"));
        for ((m, u), v) in t.data().iter().zip(x.data()).zip(y.data()) {
            let want = (0.25f64 * *u as f64 + 0.75 * *v as f64) as f32;
            assert!(
                (m - want).abs() <= f32::EPSILON * want.abs().max(1.0),
                "{name}: {m} vs {want}"
            );
        }
    }
    // Parameters for another layout are refused.
    let mut other = layout(&a);
    other.num_layers = 4;
    assert!(from_params(&other, PsgConfig::default(), &avg).is_err());
    Ok(())
}

#[test]
fn a_fedl2p_meta_net_survives_the_wire_and_is_not_read_as_a_psg() -> anyhow::Result<()> {
    use fedp2eft_core::federated::convert::{lr_net_from_params, lr_net_layout, lr_net_to_params};
    use fedp2eft_core::method::{Fedl2pConfig, LrNet, LrNetMeta};
    let cfg = Fedl2pConfig {
        hidden: 5,
        ..Default::default()
    };
    let net = LrNet::new(LrNetMeta::new("test-model|L3", 3), cfg, 9)?;
    let lay = lr_net_layout(&net, 2);
    let spec = lay.spec()?;
    let bytes = lr_net_to_params(&net)?.encode(&UpdateMeta::new("run-1", 0, "c1", 7))?;
    let (params, _): (PsgParams, UpdateMeta) =
        PsgParams::decode(&bytes, &spec, &Limits::for_spec(&spec))?;
    let back = lr_net_from_params(&lay, Fedl2pConfig::default(), &params)?;
    assert_eq!(back.config.hidden, 5);
    let x: Vec<f32> = (0..6).map(|i| i as f32 * 0.3 - 0.5).collect();
    assert_eq!(net.learning_rates(&x)?, back.learning_rates(&x)?);
    // The layouts keep the two apart in both directions.
    let p = psg(1)?;
    assert!(from_params(&lay, PsgConfig::default(), &params).is_err());
    assert!(lr_net_from_params(&layout(&p), Fedl2pConfig::default(), &to_params(&p)?).is_err());
    Ok(())
}
