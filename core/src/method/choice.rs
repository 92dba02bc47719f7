//! The one place a method's name becomes a `Method`: `personalize --method`, the FFI's
//! options, `simulate` and `reproduce` all parse a [`MethodKind`] and call [`build`] with what
//! they hold; a method missing its input (FedP²EFT without a PSG, FedL2P without its net)
//! is a typed error, not a silent fallback to another method.
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::{AdaLora, AdaLoraConfig, BtLora, Fedl2p, Fedp2eft, Lora, LrNet, Method};
use crate::adapter::PriorConfig;
use crate::psg::Psg;
use crate::{Error, Result};

/// The personalization methods, by the names every front end uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodKind {
    /// Rank = budget on every layer, λ = 1.
    Lora,
    /// λ learned on the client with the priors (BayesTune), pruned; no federation.
    BtLora,
    /// λ̂ from the federatedly trained PSG, pruned.
    Fedp2eft,
    /// peft's AdaLoRA: SVD-form adapters whose ranks are reallocated while training.
    Adalora,
    /// LoRA at per-matrix learning rates from the federated FedL2P net.
    Fedl2p,
}

impl MethodKind {
    pub const ALL: [MethodKind; 5] = [
        MethodKind::Lora,
        MethodKind::BtLora,
        MethodKind::Fedp2eft,
        MethodKind::Adalora,
        MethodKind::Fedl2p,
    ];

    /// The name on the command line, in configs and through the FFI.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Lora => "lora",
            MethodKind::BtLora => "bt-lora",
            MethodKind::Fedp2eft => "fedp2eft",
            MethodKind::Adalora => "adalora",
            MethodKind::Fedl2p => "fedl2p",
        }
    }

    /// The name in reports and tables.
    pub fn label(self) -> &'static str {
        match self {
            MethodKind::Lora => "LoRA",
            MethodKind::BtLora => "BT-LoRA",
            MethodKind::Fedp2eft => "FedP²EFT",
            MethodKind::Adalora => "AdaLoRA",
            MethodKind::Fedl2p => "FedL2P",
        }
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MethodKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MethodKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = MethodKind::ALL.iter().map(|k| k.as_str()).collect();
                Error::Method(format!("unknown method `{s}`: one of {}", names.join(", ")))
            })
    }
}

/// What the caller holds; each method takes what it needs and ignores the rest.
#[derive(Default, Clone, Copy)]
pub struct Inputs<'a> {
    /// FedP²EFT: the PSG, giving λ̂ from the client's features…
    pub psg: Option<&'a Psg>,
    /// …or a λ̂ computed already (wins over `psg`; a caller that predicted it once per client).
    pub lambda_hat: Option<&'a [f32]>,
    /// FedP²EFT's structure-only arm: its ranks with every λ = 1.
    pub ranks_only: bool,
    /// BT-LoRA: the raw λ learned on this client (`learn_lambda`).
    pub learned: Option<&'a [f32]>,
    /// BT-LoRA's clamp range; the authors' when None.
    pub priors: Option<&'a PriorConfig>,
    /// AdaLoRA's settings; the authors' when None.
    pub adalora: Option<&'a AdaLoraConfig>,
    /// FedL2P: the learned learning-rate net of this budget.
    pub lr_net: Option<&'a LrNet>,
}

static PRIORS: LazyLock<PriorConfig> = LazyLock::new(PriorConfig::default);
static ADALORA: LazyLock<AdaLoraConfig> = LazyLock::new(AdaLoraConfig::default);

fn missing(kind: MethodKind, what: &str) -> Error {
    Error::Method(format!("{kind} needs {what}"))
}

impl Inputs<'_> {
    /// The fine-tune's lr of A and B for `kind`: AdaLoRA's own setting (the authors' 1e-3),
    /// `default` for the others (FedL2P scales it per matrix by its net's output).
    pub fn lr(&self, kind: MethodKind, default: f64) -> f64 {
        match kind {
            MethodKind::Adalora => self.adalora.unwrap_or(&ADALORA).lr,
            _ => default,
        }
    }
}

/// The method `kind`, built from `inputs`.
pub fn build<'a>(kind: MethodKind, inputs: &Inputs<'a>) -> Result<Box<dyn Method + 'a>> {
    if inputs.ranks_only && kind != MethodKind::Fedp2eft {
        return Err(Error::Method(format!(
            "ranks only is FedP²EFT's structure-only arm, not a setting of {kind}"
        )));
    }
    Ok(match kind {
        MethodKind::Lora => Box::new(Lora),
        MethodKind::BtLora => {
            let raw = inputs
                .learned
                .ok_or_else(|| missing(kind, "the λ learned on the client"))?;
            Box::new(BtLora {
                raw,
                priors: inputs.priors.unwrap_or(&PRIORS),
            })
        }
        MethodKind::Fedp2eft => {
            let m = match (inputs.lambda_hat, inputs.psg) {
                (Some(lh), _) => Fedp2eft::with_lambda(lh),
                (None, Some(p)) => Fedp2eft::new(p),
                (None, None) => return Err(missing(kind, "a PSG (or its λ̂)")),
            };
            Box::new(if inputs.ranks_only { m.ranks_only() } else { m })
        }
        MethodKind::Adalora => Box::new(AdaLora(inputs.adalora.unwrap_or(&ADALORA))),
        MethodKind::Fedl2p => Box::new(Fedl2p(
            inputs
                .lr_net
                .ok_or_else(|| missing(kind, "a FedL2P learning-rate net"))?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_a_wrong_one_lists_the_choices() {
        for k in MethodKind::ALL {
            assert_eq!(k.as_str().parse::<MethodKind>().ok(), Some(k));
            let json = serde_json::to_string(&k).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let e = "lora2".parse::<MethodKind>().err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("unknown method `lora2`"), "{e}");
        assert!(e.contains("bt-lora, fedp2eft, adalora, fedl2p"), "{e}");
    }

    #[test]
    fn a_method_without_its_input_is_refused() {
        let none = Inputs::default();
        for (k, needs) in [
            (MethodKind::Fedp2eft, "a PSG"),
            (MethodKind::BtLora, "the λ learned"),
            (MethodKind::Fedl2p, "learning-rate net"),
        ] {
            let e = build(k, &none).err().map(|e| e.to_string());
            assert!(e.unwrap_or_default().contains(needs), "{k}");
        }
        for k in [MethodKind::Lora, MethodKind::Adalora] {
            assert!(build(k, &none).is_ok(), "{k}");
        }
        let lam = [1.0f32; 4];
        let arm = Inputs {
            lambda_hat: Some(&lam),
            ranks_only: true,
            ..Inputs::default()
        };
        assert!(build(MethodKind::Fedp2eft, &arm).is_ok());
        assert!(build(MethodKind::Lora, &arm).is_err());
    }
}
