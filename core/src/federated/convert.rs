//! The PSG as the wire format carries it: its layout (what it was built for) and its parameters.
use candle_core::{Device, Tensor};
use fedp2eft_wire::{PsgLayout, PsgParams, TensorData};

use crate::psg::{Psg, PsgConfig, PsgMeta};
use crate::{Error, Result};

fn wire_err(e: fedp2eft_wire::Error) -> Error {
    Error::Mismatch(format!("PSG parameters: {e}"))
}

/// The layout a server stores for a run.
pub fn layout(psg: &Psg) -> PsgLayout {
    PsgLayout {
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
    let mut p = PsgParams::default();
    for (name, var) in psg.named_vars() {
        let data = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let t = TensorData::new(var.dims().to_vec(), data).map_err(wire_err)?;
        p.insert(name, t).map_err(wire_err)?;
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
    for (name, var) in psg.named_vars() {
        let t = params
            .get(name)
            .ok_or_else(|| Error::Mismatch(format!("PSG parameter `{name}` missing")))?;
        var.set(&Tensor::from_slice(t.data(), t.shape(), &Device::Cpu)?)?;
    }
    Ok(psg)
}
