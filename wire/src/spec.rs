//! What a PSG payload must contain: tensor names and shapes (`PsgSpec`), and the model facts
//! they derive from (`PsgLayout`, sent in JSON when a run is created and with every round).
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Error, PsgParams, Result};

/// Tensor names of the PSG, in order (core/src/psg.rs names its variables with these).
pub const PSG_TENSOR_NAMES: [&str; 5] = [
    "fc1.weight",
    "fc1.bias",
    "prelu.weight",
    "fc2.weight",
    "fc2.bias",
];

/// Tensor names of FedL2P's learning-rate net, in order (core/src/method/fedl2p/net.rs names
/// its variables with these).
pub const LRNET_TENSOR_NAMES: [&str; 7] = [
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
    "fc3.weight",
    "fc3.bias",
    "inner_lr",
];

/// Longest `base_model` / `feature_layout` string: bounds the payload header.
pub const MAX_LABEL_LEN: usize = 256;

/// Expected tensor names and shapes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsgSpec {
    tensors: Vec<(String, Vec<usize>)>,
    num_elements: usize,
}

impl PsgSpec {
    /// Errors on no tensors, an empty or repeated name, or an element count overflowing usize.
    pub fn new(tensors: Vec<(String, Vec<usize>)>) -> Result<Self> {
        if tensors.is_empty() {
            return Err(Error::InvalidSpec("no tensors".into()));
        }
        let mut seen = BTreeSet::new();
        let mut num_elements = 0usize;
        for (name, shape) in &tensors {
            if name.is_empty() || !seen.insert(name.as_str()) {
                return Err(Error::InvalidSpec(format!(
                    "empty or repeated name `{name}`"
                )));
            }
            num_elements = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .and_then(|n| num_elements.checked_add(n))
                .filter(|n| n.checked_mul(4).is_some())
                .ok_or_else(|| Error::InvalidSpec(format!("`{name}` {shape:?} is too large")))?;
        }
        Ok(Self {
            tensors,
            num_elements,
        })
    }

    /// The PSG of core/src/psg.rs for L adapted linears: input 2L (mean, sd per layer),
    /// hidden = hidden_mul · 2L, output L · r_max.
    pub fn for_psg(num_layers: usize, r_max: usize, hidden_mul: usize) -> Result<Self> {
        if num_layers == 0 || r_max == 0 || hidden_mul == 0 {
            return Err(Error::InvalidSpec(format!(
                "num_layers {num_layers}, r_max {r_max}, hidden_mul {hidden_mul} must be > 0"
            )));
        }
        let overflow = || Error::InvalidSpec("PSG dimensions overflow".into());
        let input = num_layers.checked_mul(2).ok_or_else(overflow)?;
        let hidden = input.checked_mul(hidden_mul).ok_or_else(overflow)?;
        let output = num_layers.checked_mul(r_max).ok_or_else(overflow)?;
        let shapes = [
            vec![hidden, input],
            vec![hidden],
            vec![1],
            vec![output, hidden],
            vec![output],
        ];
        Self::new(
            PSG_TENSOR_NAMES
                .iter()
                .map(|n| n.to_string())
                .zip(shapes)
                .collect(),
        )
    }

    /// FedL2P's learning-rate net for L adapted linears: input 2L, two hidden layers of `hidden`
    /// units, output 2L (one rate multiplier per A and B matrix), and the 2L base rates.
    pub fn for_lr_net(num_layers: usize, hidden: usize) -> Result<Self> {
        if num_layers == 0 || hidden == 0 {
            return Err(Error::InvalidSpec(format!(
                "num_layers {num_layers}, hidden {hidden} must be > 0"
            )));
        }
        let io = num_layers
            .checked_mul(2)
            .ok_or_else(|| Error::InvalidSpec("learning-rate net dimensions overflow".into()))?;
        let shapes = [
            vec![hidden, io],
            vec![hidden],
            vec![hidden, hidden],
            vec![hidden],
            vec![io, hidden],
            vec![io],
            vec![io],
        ];
        Self::new(
            LRNET_TENSOR_NAMES
                .iter()
                .map(|n| n.to_string())
                .zip(shapes)
                .collect(),
        )
    }

    /// The spec a set of parameters satisfies (names, shapes, their order).
    pub fn of(params: &PsgParams) -> Result<Self> {
        Self::new(
            params
                .iter()
                .map(|(n, t)| (n.to_string(), t.shape().to_vec()))
                .collect(),
        )
    }

    pub fn tensors(&self) -> &[(String, Vec<usize>)] {
        &self.tensors
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_slice())
    }

    pub fn num_elements(&self) -> usize {
        self.num_elements
    }

    /// Bytes of f32 tensor data (cannot overflow: checked in `new`).
    pub fn data_bytes(&self) -> usize {
        self.num_elements * 4
    }

    /// Same names (any order) and, for each, the same shape.
    pub fn check(&self, params: &PsgParams) -> Result<()> {
        check_names(
            self.tensors.iter().map(|(n, _)| n.as_str()),
            params.iter().map(|(n, _)| n),
        )?;
        for (name, shape) in &self.tensors {
            let found = params
                .get(name)
                .ok_or_else(|| Error::MissingTensor(name.clone()))?
                .shape();
            if found != shape.as_slice() {
                return Err(Error::WrongShape {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: found.to_vec(),
                });
            }
        }
        Ok(())
    }
}

/// Missing, extra, or (one of each) renamed tensor names; the first in sorted order is named.
pub(crate) fn check_names<'a>(
    expected: impl Iterator<Item = &'a str>,
    found: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let expected: BTreeSet<&str> = expected.collect();
    let found: BTreeSet<&str> = found.collect();
    let missing = expected.difference(&found).next();
    let extra = found.difference(&expected).next();
    match (missing, extra) {
        (None, None) => Ok(()),
        (Some(m), Some(e)) => Err(Error::RenamedTensor {
            expected: m.to_string(),
            found: e.to_string(),
        }),
        (Some(m), None) => Err(Error::MissingTensor(m.to_string())),
        (None, Some(e)) => Err(Error::UnexpectedTensor(e.to_string())),
    }
}

/// Which network a run federates. Both read the same client features and travel in the same
/// messages; only their tensors differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetKind {
    /// FedP²EFT's PSG (λ̂ for L · r_max ranks).
    #[default]
    Psg,
    /// FedL2P's learning-rate net (a rate for each of the 2L LoRA matrices).
    LrNet,
}

impl NetKind {
    pub fn is_psg(&self) -> bool {
        *self == NetKind::Psg
    }
}

/// The model facts a run's network is built for; the spec derives from them. Field names
/// follow core's `PsgMeta` and `PsgConfig::hidden_mul`. `kind` is omitted for a PSG, so PSG
/// layouts read and write as before it existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsgLayout {
    #[serde(default, skip_serializing_if = "NetKind::is_psg")]
    pub kind: NetKind,
    /// Identifier of the base model the network's outputs apply to.
    pub base_model: String,
    /// L: number of adapted linears.
    pub num_layers: usize,
    /// The PSG's ranks per layer; for a learning-rate net, the LoRA rank its rates are for.
    pub r_max: usize,
    /// PSG only: hidden = hidden_mul · 2L (0 or absent for a learning-rate net).
    #[serde(default)]
    pub hidden_mul: usize,
    /// Learning-rate net only: the width of its two hidden layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// Which per-layer statistics form the network's input (core's `FEATURE_LAYOUT`).
    pub feature_layout: String,
}

impl PsgLayout {
    pub fn spec(&self) -> Result<PsgSpec> {
        match (self.kind, self.hidden) {
            (NetKind::Psg, None) => PsgSpec::for_psg(self.num_layers, self.r_max, self.hidden_mul),
            (NetKind::LrNet, Some(h)) if self.hidden_mul == 0 && self.r_max > 0 => {
                PsgSpec::for_lr_net(self.num_layers, h)
            }
            (NetKind::Psg, Some(_)) => Err(Error::InvalidSpec(
                "`hidden` is for a learning-rate net; a PSG takes hidden_mul".into(),
            )),
            _ => Err(Error::InvalidSpec(
                "a learning-rate net needs `hidden`, r_max > 0 and no hidden_mul".into(),
            )),
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("layout.base_model", &self.base_model),
            ("layout.feature_layout", &self.feature_layout),
        ] {
            if v.is_empty() || v.len() > MAX_LABEL_LEN {
                return Err(Error::field(
                    field,
                    format!("must be 1..={MAX_LABEL_LEN} bytes"),
                ));
            }
        }
        self.spec().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TensorData;

    #[test]
    fn psg_spec_matches_core_shapes() -> Result<()> {
        // core/src/psg.rs test: L = 3, r_max = 4, hidden_mul 2 → fc1 (12, 6), fc2 (12, 12).
        let s = PsgSpec::for_psg(3, 4, 2)?;
        let shapes: Vec<_> = s.tensors().iter().map(|(_, s)| s.clone()).collect();
        assert_eq!(
            shapes,
            [vec![12, 6], vec![12], vec![1], vec![12, 12], vec![12]]
        );
        assert_eq!(s.num_elements(), 72 + 12 + 1 + 144 + 12);
        // mBERT (method.md §3.2): L = 74, r_max 32 → hidden 296, output 2368.
        let m = PsgSpec::for_psg(74, 32, 2)?;
        assert_eq!(m.shape("fc2.weight"), Some(&[2368, 296][..]));
        Ok(())
    }

    #[test]
    fn lr_net_layouts_derive_their_spec_and_psg_layouts_read_as_before() -> Result<()> {
        let s = PsgSpec::for_lr_net(3, 100)?;
        let shapes: Vec<_> = s.tensors().iter().map(|(_, s)| s.clone()).collect();
        assert_eq!(
            shapes,
            [
                vec![100, 6],
                vec![100],
                vec![100, 100],
                vec![100],
                vec![6, 100],
                vec![6],
                vec![6]
            ]
        );
        let psg_json =
            r#"{"base_model":"m","num_layers":3,"r_max":4,"hidden_mul":2,"feature_layout":"f"}"#;
        let psg: PsgLayout = serde_json::from_str(psg_json).expect("a PSG layout of before");
        assert_eq!(psg.kind, NetKind::Psg);
        assert_eq!(
            serde_json::to_string(&psg).expect("json"),
            psg_json,
            "written as before"
        );
        let lr_json = r#"{"kind":"lr-net","base_model":"m","num_layers":3,"r_max":2,"hidden":100,"feature_layout":"f"}"#;
        let lr: PsgLayout = serde_json::from_str(lr_json).expect("an lr-net layout");
        assert_eq!(
            (lr.kind, lr.hidden, lr.hidden_mul),
            (NetKind::LrNet, Some(100), 0)
        );
        assert_eq!(lr.spec()?, s);
        let back: PsgLayout =
            serde_json::from_str(&serde_json::to_string(&lr).expect("json")).expect("parse");
        assert_eq!(back, lr);
        for bad in [
            PsgLayout {
                hidden: None,
                ..lr.clone()
            },
            PsgLayout {
                hidden_mul: 2,
                ..lr.clone()
            },
            PsgLayout {
                r_max: 0,
                ..lr.clone()
            },
            PsgLayout {
                hidden: Some(100),
                ..psg.clone()
            },
        ] {
            assert!(matches!(bad.spec(), Err(Error::InvalidSpec(_))), "{bad:?}");
        }
        assert!(serde_json::from_str::<PsgLayout>(&lr_json.replace("lr-net", "lrnet")).is_err());
        Ok(())
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(matches!(
            PsgSpec::for_psg(0, 4, 2),
            Err(Error::InvalidSpec(_))
        ));
        assert!(matches!(
            PsgSpec::for_psg(usize::MAX / 2, 4, 2),
            Err(Error::InvalidSpec(_))
        ));
        let dup = vec![("a".to_string(), vec![1]), ("a".to_string(), vec![2])];
        assert!(matches!(PsgSpec::new(dup), Err(Error::InvalidSpec(_))));
        assert!(matches!(PsgSpec::new(vec![]), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn check_reports_missing_extra_renamed_and_shape() -> Result<()> {
        let spec = PsgSpec::new(vec![("a".into(), vec![2]), ("b".into(), vec![1])])?;
        let t = |n: usize| TensorData::zeros(vec![n]);
        let mut p = PsgParams::default();
        p.insert("a", t(2)?)?;
        assert_eq!(spec.check(&p), Err(Error::MissingTensor("b".into())));
        p.insert("c", t(1)?)?;
        assert!(matches!(spec.check(&p), Err(Error::RenamedTensor { .. })));
        p.insert("b", t(1)?)?;
        assert_eq!(spec.check(&p), Err(Error::UnexpectedTensor("c".into())));
        let mut q = PsgParams::default();
        q.insert("b", t(1)?)?;
        q.insert("a", t(3)?)?;
        assert!(matches!(spec.check(&q), Err(Error::WrongShape { .. })));
        Ok(())
    }
}
