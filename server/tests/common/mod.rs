//! Shared by the server's integration tests: a tiny PSG (L = 2, r_max = 4), payload builders,
//! and (`db`) the per-test database of either store.
#![allow(dead_code)] // each test binary uses a different subset

pub mod db;
pub mod process;

use std::collections::HashMap;

use fedp2eft_wire::{
    CreateRun, PsgLayout, PsgParams, PsgSpec, RoundMeta, TensorData, UpdateMeta, META_KEY,
};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub const ADMIN: &str = "admin-token-0123456789";

pub fn layout() -> PsgLayout {
    PsgLayout {
        kind: fedp2eft_wire::NetKind::Psg,
        hidden: None,
        base_model: "test/tiny".into(),
        num_layers: 2,
        r_max: 4,
        hidden_mul: 2,
        feature_layout: "test/v1".into(),
    }
}

pub fn spec() -> PsgSpec {
    layout().spec().expect("the tiny layout is valid")
}

/// The tiny layout as FedL2P's learning-rate net (2L = 4 rates, hidden 3).
pub fn lr_net_layout() -> PsgLayout {
    PsgLayout {
        kind: fedp2eft_wire::NetKind::LrNet,
        hidden: Some(3),
        hidden_mul: 0,
        r_max: 2,
        ..layout()
    }
}

/// Parameters whose element i of every tensor is `base + i / 2` (exact in f32).
pub fn params(base: f32) -> PsgParams {
    params_for(&spec(), base)
}

/// `params` for any spec.
pub fn params_for(spec: &PsgSpec, base: f32) -> PsgParams {
    let mut p = PsgParams::default();
    for (name, shape) in spec.tensors() {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|i| base + i as f32 * 0.5).collect();
        p.insert(
            name.clone(),
            TensorData::new(shape.clone(), data).expect("shape"),
        )
        .expect("unique");
    }
    p
}

pub fn create_run(name: &str, fraction: f64, rounds: u32, min_completion: f64) -> CreateRun {
    CreateRun {
        seed: 42,
        fraction,
        rounds,
        deadline_s: 600,
        min_completion,
        ..CreateRun::new(name, layout())
    }
}

pub fn create_body(run: &CreateRun, phi0: &PsgParams) -> Vec<u8> {
    phi0.encode(run).expect("encode")
}

pub fn update_body(run: &str, round: u32, client: &str, n: u64, p: &PsgParams) -> Vec<u8> {
    p.encode(&UpdateMeta::new(run, round, client, n))
        .expect("encode")
}

/// Decodes a downloaded phi_k.
pub fn decode_psg(bytes: &[u8]) -> (PsgParams, RoundMeta) {
    decode_for(&spec(), bytes)
}

/// `decode_psg` for any spec.
pub fn decode_for(spec: &PsgSpec, bytes: &[u8]) -> (PsgParams, RoundMeta) {
    PsgParams::decode::<RoundMeta>(bytes, spec, &fedp2eft_wire::Limits::for_spec(spec))
        .expect("a served PSG decodes")
}

/// The element-wise FedAvg Σ n_c φ_c / Σ n_c computed here in f64, independently of wire.
pub fn hand_fedavg(parts: &[(f32, u64)]) -> PsgParams {
    hand_fedavg_for(&spec(), parts)
}

/// `hand_fedavg` for any spec.
pub fn hand_fedavg_for(spec: &PsgSpec, parts: &[(f32, u64)]) -> PsgParams {
    let total: f64 = parts.iter().map(|(_, n)| *n as f64).sum();
    let mut out = PsgParams::default();
    for (name, shape) in spec.tensors() {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let s: f64 = parts
                    .iter()
                    .map(|(base, w)| *w as f64 * (f64::from(*base) + i as f64 * 0.5))
                    .sum();
                (s / total) as f32
            })
            .collect();
        out.insert(
            name.clone(),
            TensorData::new(shape.clone(), data).expect("shape"),
        )
        .expect("unique");
    }
    out
}

/// A payload with update metadata whose `fc1.bias` is F16 instead of F32.
pub fn wrong_dtype_body(run: &str, round: u32, client: &str) -> Vec<u8> {
    let p = params(1.0);
    let mut meta = serde_json::to_value(UpdateMeta::new(run, round, client, 5)).expect("json");
    meta["kind"] = "update".into();
    let raw: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = p
        .iter()
        .map(|(name, t)| {
            if name == "fc1.bias" {
                let bytes = vec![0u8; t.data().len() * 2];
                (
                    name.to_string(),
                    t.shape().to_vec(),
                    bytes,
                    safetensors::Dtype::F16,
                )
            } else {
                let bytes = t.data().iter().flat_map(|x| x.to_le_bytes()).collect();
                (
                    name.to_string(),
                    t.shape().to_vec(),
                    bytes,
                    safetensors::Dtype::F32,
                )
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = raw
        .iter()
        .map(|(n, s, b, d)| {
            let view = safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view");
            (n.clone(), view)
        })
        .collect();
    let md = HashMap::from([(META_KEY.to_string(), meta.to_string())]);
    safetensors::serialize(views, Some(md)).expect("serialize")
}
