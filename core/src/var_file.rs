//! Small trained networks (the PSG, FedL2P's meta-net) as safetensors files of named f32
//! variables, whose metadata says what they are, so that one cannot be read as the other or
//! applied to a model it was not trained for.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::{Error, Result};

/// Writes `vars` under their names with `metadata` (which must hold the `format` key).
pub fn save(
    path: &Path,
    kind: &'static str,
    metadata: HashMap<String, String>,
    vars: &[(&str, Var)],
) -> Result<()> {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = vars
        .iter()
        .map(|(n, v)| {
            let data = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            Ok((n.to_string(), v.dims().to_vec(), bytes))
        })
        .collect::<Result<_>>()?;
    let views = bufs
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::format(kind, path, e.to_string()))?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(kind, path, e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// A file read and checked to be of `format`: its metadata and raw bytes.
pub struct Loaded<'p> {
    path: &'p Path,
    kind: &'static str,
    bytes: Vec<u8>,
    pub metadata: HashMap<String, String>,
}

impl<'p> Loaded<'p> {
    pub fn read(path: &'p Path, kind: &'static str, format: &str, what: &str) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(kind, path, e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(format) {
            return Err(Error::format(
                kind,
                path,
                format!("not a fedp2eft {what} (metadata `format` missing)"),
            ));
        }
        Ok(Self {
            path,
            kind,
            bytes,
            metadata,
        })
    }

    pub fn bad(&self, reason: impl Into<String>) -> Error {
        Error::format(self.kind, self.path, reason)
    }

    /// A metadata entry parsed from JSON.
    pub fn field<T: for<'de> serde::Deserialize<'de>>(&self, key: &str) -> Result<T> {
        let text = self
            .metadata
            .get(key)
            .ok_or_else(|| self.bad(format!("metadata `{key}` missing")))?;
        serde_json::from_str(text).map_err(|e| self.bad(format!("metadata `{key}`: {e}")))
    }

    /// Sets every variable from the tensor of its name: f32, the variable's shape, all finite.
    pub fn fill(&self, vars: &[(&str, Var)]) -> Result<()> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes)
            .map_err(|e| self.bad(e.to_string()))?;
        for (name, var) in vars {
            let view = st
                .tensor(name)
                .map_err(|e| self.bad(format!("{name}: {e}")))?;
            if view.dtype() != safetensors::Dtype::F32 || view.shape() != var.dims() {
                return Err(self.bad(format!(
                    "{name}: expected f32 {:?}, found {:?} {:?}",
                    var.dims(),
                    view.dtype(),
                    view.shape()
                )));
            }
            let t = Tensor::from_raw_buffer(view.data(), DType::F32, view.shape(), &Device::Cpu)?;
            if t.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .any(|x| !x.is_finite())
            {
                return Err(self.bad(format!("{name} holds NaN or infinity")));
            }
            var.set(&t)?;
        }
        Ok(())
    }
}

/// A value as a metadata entry.
pub fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Config(e.to_string()))
}
