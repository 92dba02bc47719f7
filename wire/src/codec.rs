//! PSG payloads as safetensors bytes: F32 tensors plus one `__metadata__` key, `fedp2eft`,
//! whose value is the JSON of a `PayloadMeta` with its `kind`. Decoding validates everything
//! a peer controls, cheapest checks first, before allocating tensor data.
use std::collections::HashMap;

use safetensors::tensor::{Metadata, SafeTensorError, TensorView};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::spec::check_names;
use crate::{check_protocol, Error, Limits, PayloadMeta, PsgParams, PsgSpec, Result, TensorData};

/// The one `__metadata__` key of a payload.
pub const META_KEY: &str = "fedp2eft";

/// safetensors' 8-byte little-endian header length prefix.
const PREFIX: usize = 8;

impl PsgParams {
    /// Serializes to safetensors with `meta` in the metadata. Does not validate (decode does),
    /// so a client should `check_finite` first. The bytes are deterministic: safetensors sorts
    /// tensors by name and the metadata has a single key (it is a HashMap inside safetensors,
    /// whose order varies), so equal updates have equal digests.
    pub fn encode<M: PayloadMeta>(&self, meta: &M) -> Result<Vec<u8>> {
        let mut value =
            serde_json::to_value(meta).map_err(|e| Error::MetadataInvalid(e.to_string()))?;
        let Value::Object(obj) = &mut value else {
            return Err(Error::MetadataInvalid(
                "metadata is not a JSON object".into(),
            ));
        };
        obj.insert("kind".into(), Value::from(M::KIND));
        let md = HashMap::from([(META_KEY.to_string(), value.to_string())]);
        let bytes: Vec<(&str, &[usize], Vec<u8>)> = self
            .iter()
            .map(|(n, t)| {
                let b = t.data().iter().flat_map(|x| x.to_le_bytes()).collect();
                (n, t.shape(), b)
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, shape, b)| {
                TensorView::new(Dtype::F32, shape.to_vec(), b).map(|v| (n.to_string(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidSpec(e.to_string()))?;
        safetensors::serialize(views, Some(md)).map_err(|e| Error::InvalidSpec(e.to_string()))
    }

    /// Parses and validates a payload against `spec`: size limits, safetensors structure,
    /// protocol version, metadata kind and fields, tensor names, dtypes, shapes, finiteness.
    pub fn decode<M: PayloadMeta>(
        bytes: &[u8],
        spec: &PsgSpec,
        limits: &Limits,
    ) -> Result<(PsgParams, M)> {
        decode_with(bytes, limits, |_: &M| Ok(spec.clone()))
    }
}

/// `decode` where the spec comes from the metadata itself (run creation carries its layout).
pub(crate) fn decode_with<M: PayloadMeta>(
    bytes: &[u8],
    limits: &Limits,
    spec_of: impl FnOnce(&M) -> Result<PsgSpec>,
) -> Result<(PsgParams, M)> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            len: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let Some(prefix) = bytes.first_chunk::<PREFIX>() else {
        return Err(Error::Truncated(format!(
            "{} bytes, shorter than the {PREFIX}-byte header length",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(*prefix);
    if header_len > limits.max_header_bytes as u64 {
        return Err(Error::HeaderTooLarge {
            len: header_len,
            max: limits.max_header_bytes,
        });
    }
    let (n, header) = SafeTensors::read_metadata(bytes).map_err(structure_error)?;
    let meta: M = read_meta(&header)?;
    let spec = spec_of(&meta)?;
    meta.check(&spec, limits)?;
    let data = bytes
        .get(PREFIX + n..)
        .ok_or_else(|| Error::Truncated("no data section".into()))?;
    Ok((read_tensors(&header, data, &spec)?, meta))
}

fn structure_error(e: SafeTensorError) -> Error {
    match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            Error::Truncated(format!("header: {e}"))
        }
        SafeTensorError::MetadataIncompleteBuffer => Error::Truncated(
            "data section does not match the header's offsets (truncated or trailing bytes)".into(),
        ),
        e => Error::NotSafetensors(e.to_string()),
    }
}

fn read_meta<M: PayloadMeta>(header: &Metadata) -> Result<M> {
    let md = header
        .metadata()
        .as_ref()
        .ok_or_else(|| Error::MetadataMissing("__metadata__".into()))?;
    let json = md
        .get(META_KEY)
        .ok_or_else(|| Error::MetadataMissing(META_KEY.into()))?;
    if let Some(other) = md.keys().find(|k| k.as_str() != META_KEY) {
        return Err(Error::MetadataInvalid(format!("unexpected key `{other}`")));
    }
    let mut value: Value =
        serde_json::from_str(json).map_err(|e| Error::MetadataInvalid(e.to_string()))?;
    let Value::Object(obj) = &mut value else {
        return Err(Error::MetadataInvalid("not a JSON object".into()));
    };
    // The version first: a newer peer's metadata may not parse as ours at all.
    let protocol = obj
        .get("protocol")
        .ok_or_else(|| Error::MetadataMissing("protocol".into()))?
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| Error::MetadataInvalid("`protocol` is not a u32".into()))?;
    check_protocol(protocol)?;
    match obj.remove("kind") {
        None => return Err(Error::MetadataMissing("kind".into())),
        Some(Value::String(k)) if k == M::KIND => {}
        Some(k) => {
            return Err(Error::MetadataInvalid(format!(
                "payload kind {k}, expected \"{}\"",
                M::KIND
            )))
        }
    }
    serde_json::from_value(value).map_err(|e| Error::MetadataInvalid(e.to_string()))
}

fn read_tensors(header: &Metadata, data: &[u8], spec: &PsgSpec) -> Result<PsgParams> {
    let found = header.offset_keys();
    check_names(
        spec.tensors().iter().map(|(n, _)| n.as_str()),
        found.iter().map(String::as_str),
    )?;
    let mut params = PsgParams::default();
    for (name, shape) in spec.tensors() {
        let info = header
            .info(name)
            .ok_or_else(|| Error::MissingTensor(name.clone()))?;
        if info.dtype != Dtype::F32 {
            return Err(Error::WrongDtype {
                name: name.clone(),
                found: info.dtype.to_string(),
            });
        }
        if info.shape != *shape {
            return Err(Error::WrongShape {
                name: name.clone(),
                expected: shape.clone(),
                found: info.shape.clone(),
            });
        }
        let (start, end) = info.data_offsets;
        let raw = data
            .get(start..end)
            .ok_or_else(|| Error::Truncated(format!("data of `{name}`")))?;
        // Little-endian f32; `chunks_exact` needs no alignment of the byte buffer.
        let values: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let tensor = TensorData::new(shape.clone(), values)?;
        if let Some((index, value)) = tensor.first_non_finite() {
            return Err(Error::NonFinite {
                name: name.clone(),
                index,
                value,
            });
        }
        params.insert(name.clone(), tensor)?;
    }
    Ok(params)
}
