//! Helpers shared by the integration tests: a small PSG, deterministic values, and raw
//! safetensors bodies for payloads `encode` would never write.
#![allow(dead_code)]
use std::collections::HashMap;

use fedp2eft_wire::{PsgLayout, PsgParams, PsgSpec, RoundMeta, TensorData, UpdateMeta};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

pub fn layout() -> PsgLayout {
    PsgLayout {
        kind: fedp2eft_wire::NetKind::Psg,
        hidden: None,
        base_model: "test-model".into(),
        num_layers: 2,
        r_max: 3,
        hidden_mul: 2,
        feature_layout: "mean-sd-interleaved/adapted-linear-input/module-order/v1".into(),
    }
}

pub fn spec() -> PsgSpec {
    layout().spec().expect("the test layout is valid")
}

/// Deterministic, distinct, finite values (no RNG needed).
pub fn params(spec: &PsgSpec, seed: u32) -> PsgParams {
    let mut p = PsgParams::zeros(spec).expect("valid spec");
    let names: Vec<String> = p.names().map(String::from).collect();
    for (t, name) in names.iter().enumerate() {
        if let Some(tensor) = p.get_mut(name) {
            for (i, v) in tensor.data_mut().iter_mut().enumerate() {
                *v = ((seed as f32 + 1.0) * 0.37 + t as f32 * 1.3 + i as f32 * 0.011).sin();
            }
        }
    }
    p
}

pub fn update(n: u64) -> UpdateMeta {
    UpdateMeta::new("run-1", 4, "client-7", n)
}

pub fn round_meta() -> RoundMeta {
    RoundMeta::new("run-1", 4, layout())
}

/// A safetensors body with arbitrary tensors (any dtype) and `__metadata__`.
pub fn raw(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], md: Option<&[(&str, &str)]>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            let v = TensorView::new(*d, s.clone(), b).expect("consistent test tensor");
            (n.to_string(), v)
        })
        .collect();
    let md: Option<HashMap<String, String>> = md.map(|kv| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    safetensors::serialize(views, md).expect("serializable")
}

/// The tensors of `p` as raw F32 entries, for `raw`.
pub fn raw_tensors(p: &PsgParams) -> Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> {
    p.iter()
        .map(|(n, t)| (n, Dtype::F32, t.shape().to_vec(), le_bytes(t)))
        .collect()
}

pub fn le_bytes(t: &TensorData) -> Vec<u8> {
    t.data().iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The JSON `encode` writes for an update, to edit in tests.
pub fn update_json(n: u64) -> String {
    format!(
        r#"{{"client":"client-7","kind":"update","num_samples":{n},"protocol":1,"round":4,"run":"run-1"}}"#
    )
}
