//! The PSG (and FedL2P's learning-rate net) as the wire format carries it: its layout (what it
//! was built for) and its parameters.
use candle_core::{Device, Tensor, Var};
use fedp2eft_wire::{NetKind, PsgLayout, PsgParams, TensorData};

use crate::method::fedl2p::{Fedl2pConfig, LrNet, LrNetMeta};
use crate::psg::{Psg, PsgConfig, PsgMeta};
use crate::{Error, Result};

fn wire_err(e: fedp2eft_wire::Error) -> Error {
    Error::Mismatch(format!("PSG parameters: {e}"))
}

/// The layout a server stores for a run.
pub fn layout(psg: &Psg) -> PsgLayout {
    PsgLayout {
        kind: NetKind::Psg,
        hidden: None,
        base_model: psg.meta.base_model.clone(),
        num_layers: psg.meta.num_layers,
        r_max: psg.meta.r_max,
        hidden_mul: psg.config.hidden_mul,
        feature_layout: psg.meta.feature_layout.clone(),
    }
}

/// What a run's PSG is built for, as the layout states it.
pub fn meta(layout: &PsgLayout) -> PsgMeta {
    PsgMeta {
        base_model: layout.base_model.clone(),
        num_layers: layout.num_layers,
        r_max: layout.r_max,
        feature_layout: layout.feature_layout.clone(),
    }
}

/// The PSG's parameters under their file names (fc1.weight, …).
pub fn to_params(psg: &Psg) -> Result<PsgParams> {
    vars_to_params(&psg.named_vars())
}

fn vars_to_params(vars: &[(&str, Var)]) -> Result<PsgParams> {
    let mut p = PsgParams::default();
    for (name, var) in vars {
        let data = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let t = TensorData::new(var.dims().to_vec(), data).map_err(wire_err)?;
        p.insert(*name, t).map_err(wire_err)?;
    }
    Ok(p)
}

/// A PSG for `layout` holding `params` (stage-2 settings from `config`).
pub fn from_params(layout: &PsgLayout, config: PsgConfig, params: &PsgParams) -> Result<Psg> {
    layout
        .spec()
        .and_then(|s| s.check(params))
        .map_err(wire_err)?;
    let meta = meta(layout);
    let config = PsgConfig {
        hidden_mul: layout.hidden_mul,
        ..config
    };
    let psg = Psg::new(meta, config, 0)?;
    set_vars(&psg.named_vars(), params)?;
    Ok(psg)
}

fn set_vars(vars: &[(&str, Var)], params: &PsgParams) -> Result<()> {
    for (name, var) in vars {
        let t = params
            .get(name)
            .ok_or_else(|| Error::Mismatch(format!("parameter `{name}` missing")))?;
        var.set(&Tensor::from_slice(t.data(), t.shape(), &Device::Cpu)?)?;
    }
    Ok(())
}

/// The layout of a run that federates FedL2P's meta-net for LoRA of rank `rank`.
pub fn lr_net_layout(net: &LrNet, rank: usize) -> PsgLayout {
    PsgLayout {
        kind: NetKind::LrNet,
        base_model: net.meta.base_model.clone(),
        num_layers: net.meta.num_layers,
        r_max: rank,
        hidden_mul: 0,
        hidden: Some(net.config.hidden),
        feature_layout: net.meta.feature_layout.clone(),
    }
}

/// The meta-net's parameters (and base rates) under their file names.
pub fn lr_net_to_params(net: &LrNet) -> Result<PsgParams> {
    vars_to_params(&net.named_vars())
}

/// A meta-net for an lr-net `layout` holding `params` (meta-training settings from `config`).
pub fn lr_net_from_params(
    layout: &PsgLayout,
    config: Fedl2pConfig,
    params: &PsgParams,
) -> Result<LrNet> {
    let (NetKind::LrNet, Some(hidden)) = (layout.kind, layout.hidden) else {
        return Err(Error::Mismatch(format!(
            "the run federates a {:?}, not FedL2P's learning-rate net",
            layout.kind
        )));
    };
    layout
        .spec()
        .and_then(|s| s.check(params))
        .map_err(wire_err)?;
    let meta = LrNetMeta {
        base_model: layout.base_model.clone(),
        num_layers: layout.num_layers,
        feature_layout: layout.feature_layout.clone(),
    };
    let net = LrNet::new(meta, Fedl2pConfig { hidden, ..config }, 0)?;
    set_vars(&net.named_vars(), params)?;
    Ok(net)
}
