//! Payload encode/decode: round trips, determinism, and every validation error triggered on
//! purpose.
mod common;

use common::*;
use fedp2eft_wire::{
    sha256_hex, CreateRun, Error, ErrorCode, Limits, PsgParams, PsgSpec, RoundMeta, TensorData,
    UpdateMeta, META_KEY,
};
use safetensors::Dtype;

type R = anyhow::Result<()>;

fn decode_update(bytes: &[u8]) -> fedp2eft_wire::Result<(PsgParams, UpdateMeta)> {
    PsgParams::decode::<UpdateMeta>(bytes, &spec(), &Limits::default())
}

fn valid() -> anyhow::Result<Vec<u8>> {
    Ok(params(&spec(), 1).encode(&update(100))?)
}

#[test]
fn update_round_trips_exactly() -> R {
    let p = params(&spec(), 1);
    let bytes = p.encode(&update(100))?;
    let (back, meta) = decode_update(&bytes)?;
    assert!(back.bit_eq(&p));
    assert_eq!(meta, update(100));
    // Tensors come back in spec order whatever order they were built in.
    let order: Vec<&str> = back.names().collect();
    assert_eq!(order, fedp2eft_wire::PSG_TENSOR_NAMES);
    Ok(())
}

#[test]
fn metadata_is_one_key_of_json_readable_by_any_safetensors_reader() -> R {
    let bytes = valid()?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let md = header.metadata().clone().unwrap_or_default();
    assert_eq!(md.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&md[META_KEY])?;
    assert_eq!(
        v,
        serde_json::from_str::<serde_json::Value>(&update_json(100))?
    );
    Ok(())
}

#[test]
fn encoding_is_deterministic_so_digests_identify_updates() -> R {
    let p = params(&spec(), 3);
    let first = p.encode(&update(9))?;
    for _ in 0..20 {
        assert_eq!(p.encode(&update(9))?, first);
    }
    assert_ne!(sha256_hex(&first), sha256_hex(&p.encode(&update(10))?));
    Ok(())
}

#[test]
fn round_download_round_trips_and_checks_its_layout() -> R {
    let p = params(&spec(), 2);
    let bytes = p.encode(&round_meta())?;
    let (back, meta) = PsgParams::decode::<RoundMeta>(&bytes, &spec(), &Limits::default())?;
    assert!(back.bit_eq(&p) && meta == round_meta());
    // Same tensors, but the metadata claims a layout other than the client's model.
    let mut other = round_meta();
    other.layout.r_max = 4;
    let e = PsgParams::decode::<RoundMeta>(&p.encode(&other)?, &spec(), &Limits::default());
    assert!(matches!(e, Err(Error::MetadataInvalid(_))), "{e:?}");
    // A download is not an upload.
    assert!(matches!(decode_update(&bytes), Err(Error::MetadataInvalid(m)) if m.contains("kind")));
    Ok(())
}

#[test]
fn run_creation_carries_config_and_initial_psg() -> R {
    let run = CreateRun::new("xnli-1", layout());
    let p0 = params(&spec(), 0);
    let (back, meta) = CreateRun::decode(&p0.encode(&run)?, &Limits::default())?;
    assert!(back.bit_eq(&p0));
    assert_eq!(meta, run);
    let bad = CreateRun {
        fraction: 2.0,
        ..run.clone()
    };
    let e = CreateRun::decode(&p0.encode(&bad)?, &Limits::default());
    assert!(
        matches!(
            e,
            Err(Error::InvalidField {
                field: "fraction",
                ..
            })
        ),
        "{e:?}"
    );
    // φ_0 must match the declared layout.
    let small = params(&PsgSpec::for_psg(1, 3, 2)?, 0);
    let e = CreateRun::decode(&small.encode(&run)?, &Limits::default());
    assert!(matches!(e, Err(Error::WrongShape { .. })), "{e:?}");
    Ok(())
}

#[test]
fn size_limits_come_first() -> R {
    let bytes = valid()?;
    let tight = Limits {
        max_bytes: bytes.len() - 1,
        ..Limits::default()
    };
    let e = PsgParams::decode::<UpdateMeta>(&bytes, &spec(), &tight);
    assert!(matches!(e, Err(Error::TooLarge { .. })), "{e:?}");
    assert_eq!(e.err().map(|e| e.code()), Some(ErrorCode::TooLarge));
    let exact = Limits::for_spec(&spec());
    assert!(PsgParams::decode::<UpdateMeta>(&bytes, &spec(), &exact).is_ok());
    let small_header = Limits {
        max_header_bytes: 64,
        ..Limits::default()
    };
    let e = PsgParams::decode::<UpdateMeta>(&bytes, &spec(), &small_header);
    assert!(matches!(e, Err(Error::HeaderTooLarge { .. })), "{e:?}");
    // A header length prefix near u64::MAX is refused before any allocation.
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        decode_update(&huge),
        Err(Error::HeaderTooLarge { .. })
    ));
    Ok(())
}

#[test]
fn truncated_and_garbage_bodies() -> R {
    let bytes = valid()?;
    for cut in [0, 5, 8, 20, bytes.len() - 1] {
        let e = decode_update(&bytes[..cut]);
        assert!(matches!(e, Err(Error::Truncated(_))), "cut {cut}: {e:?}");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(decode_update(&trailing), Err(Error::Truncated(_))));
    let mut garbage = 4u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"{no}");
    assert!(matches!(
        decode_update(&garbage),
        Err(Error::NotSafetensors(_))
    ));
    let e = decode_update(b"PK\x03\x04 this is a zip file, not safetensors");
    assert!(e.is_err());
    Ok(())
}

#[test]
fn wrong_protocol_is_reported_before_anything_else_in_the_metadata() -> R {
    let p = params(&spec(), 1);
    let mut meta = update(100);
    meta.protocol = 2;
    let e = decode_update(&p.encode(&meta)?);
    assert!(
        matches!(
            e,
            Err(Error::WrongProtocol {
                found: 2,
                expected: 1
            })
        ),
        "{e:?}"
    );
    // A future version's metadata with fields we do not know still reads as a version error.
    let future = r#"{"protocol":2,"kind":"update","shard":3}"#;
    let bytes = raw(&raw_tensors(&p), Some(&[(META_KEY, future)]));
    assert!(matches!(
        decode_update(&bytes),
        Err(Error::WrongProtocol { .. })
    ));
    assert_eq!(
        decode_update(&bytes).err().map(|e| e.code().http_status()),
        Some(400)
    );
    Ok(())
}

#[test]
fn missing_or_unparseable_metadata() -> R {
    let p = params(&spec(), 1);
    let t = raw_tensors(&p);
    let missing = |md: Option<&[(&str, &str)]>| decode_update(&raw(&t, md));
    assert!(matches!(missing(None), Err(Error::MetadataMissing(k)) if k == "__metadata__"));
    let e = missing(Some(&[("format", "pt")]));
    assert!(matches!(e, Err(Error::MetadataMissing(k)) if k == META_KEY));
    let no_protocol = r#"{"kind":"update","run":"r"}"#;
    let e = missing(Some(&[(META_KEY, no_protocol)]));
    assert!(matches!(e, Err(Error::MetadataMissing(k)) if k == "protocol"));
    let no_kind = update_json(5).replace(r#""kind":"update","#, "");
    let e = missing(Some(&[(META_KEY, &no_kind)]));
    assert!(matches!(e, Err(Error::MetadataMissing(k)) if k == "kind"));
    for bad in [
        "not json".to_string(),
        "[1, 2]".to_string(),
        r#"{"protocol":"1"}"#.to_string(),
        update_json(5).replace("num_samples", "num_sample"),
        update_json(5).replace(r#""round":4"#, r#""round":-4"#),
        update_json(5).replace("client-7", "client/7"),
        update_json(5).replace(r#""kind":"update""#, r#""kind":"round""#),
    ] {
        let e = missing(Some(&[(META_KEY, &bad)]));
        assert!(matches!(e, Err(Error::MetadataInvalid(_))), "{bad}: {e:?}");
        assert_eq!(e.err().map(|e| e.code().http_status()), Some(422));
    }
    let extra_key = missing(Some(&[(META_KEY, &update_json(5)), ("note", "hi")]));
    assert!(matches!(extra_key, Err(Error::MetadataInvalid(_))));
    Ok(())
}

#[test]
fn num_samples_zero_or_above_the_limit() -> R {
    let p = params(&spec(), 1);
    assert!(matches!(
        decode_update(&p.encode(&update(0))?),
        Err(Error::NumSamples { value: 0, .. })
    ));
    let limits = Limits {
        max_num_samples: 1000,
        ..Limits::default()
    };
    let e = PsgParams::decode::<UpdateMeta>(&p.encode(&update(1001))?, &spec(), &limits);
    assert!(matches!(
        e,
        Err(Error::NumSamples {
            value: 1001,
            max: 1000
        })
    ));
    assert!(PsgParams::decode::<UpdateMeta>(&p.encode(&update(1000))?, &spec(), &limits).is_ok());
    Ok(())
}

/// `p` with tensor `name` replaced (or dropped with `None`), keeping the others' order.
fn with(p: &PsgParams, name: &str, repl: Option<(&str, TensorData)>) -> PsgParams {
    let mut out = PsgParams::default();
    let mut repl = repl;
    for (n, t) in p.iter() {
        let entry = if n == name {
            repl.take().map(|(m, t)| (m.to_string(), t))
        } else {
            Some((n.to_string(), t.clone()))
        };
        if let Some((n, t)) = entry {
            out.insert(n, t).expect("distinct names");
        }
    }
    out
}

#[test]
fn missing_extra_and_renamed_tensors() -> R {
    let p = params(&spec(), 1);
    let bias = p.get("fc2.bias").cloned().expect("present");
    let e = decode_update(&with(&p, "fc2.bias", None).encode(&update(1))?);
    assert_eq!(e.err(), Some(Error::MissingTensor("fc2.bias".into())));
    let mut extra = p.clone();
    extra.insert("fc3.weight", TensorData::zeros(vec![2])?)?;
    let e = decode_update(&extra.encode(&update(1))?);
    assert_eq!(e.err(), Some(Error::UnexpectedTensor("fc3.weight".into())));
    let renamed = with(&p, "fc2.bias", Some(("fc2.b", bias)));
    let e = decode_update(&renamed.encode(&update(1))?);
    assert_eq!(
        e.err(),
        Some(Error::RenamedTensor {
            expected: "fc2.bias".into(),
            found: "fc2.b".into()
        })
    );
    Ok(())
}

#[test]
fn wrong_shape_and_dtype() -> R {
    let p = params(&spec(), 1);
    // Same number of values, other shape: only the shape check can catch it.
    let w = p.get("fc1.weight").cloned().expect("present");
    let flat = TensorData::new(vec![w.data().len()], w.data().to_vec())?;
    let e = decode_update(&with(&p, "fc1.weight", Some(("fc1.weight", flat))).encode(&update(1))?);
    assert!(
        matches!(&e, Err(Error::WrongShape { name, expected, .. }) if name == "fc1.weight" && expected == &[8, 4]),
        "{e:?}"
    );
    let mut t = raw_tensors(&p);
    for entry in t.iter_mut().filter(|e| e.0 == "prelu.weight") {
        entry.1 = Dtype::F64;
        entry.3 = 0.25f64.to_le_bytes().to_vec();
    }
    let e = decode_update(&raw(&t, Some(&[(META_KEY, &update_json(1))])));
    assert!(
        matches!(&e, Err(Error::WrongDtype { name, found }) if name == "prelu.weight" && found == "F64"),
        "{e:?}"
    );
    Ok(())
}

#[test]
fn nan_and_infinities_are_named_with_their_index() -> R {
    for (bad, tensor, index) in [
        (f32::NAN, "fc1.bias", 3),
        (f32::INFINITY, "fc2.weight", 0),
        (f32::NEG_INFINITY, "prelu.weight", 0),
    ] {
        let mut p = params(&spec(), 1);
        if let Some(t) = p.get_mut(tensor) {
            t.data_mut()[index] = bad;
        }
        let e = decode_update(&p.encode(&update(1))?);
        assert!(
            matches!(&e, Err(Error::NonFinite { name, index: i, .. }) if name == tensor && *i == index),
            "{e:?}"
        );
        assert_eq!(e.err().map(|e| e.code().http_status()), Some(422));
    }
    Ok(())
}
