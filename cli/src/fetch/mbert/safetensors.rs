//! A streaming safetensors writer for f32 tensors: the header (names, shapes, offsets) is known
//! up front, then each tensor's bytes are appended in that order, so converting 700 MB never
//! holds more than one tensor in memory.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

pub struct Writer {
    out: BufWriter<File>,
    /// (name, byte size) in file order, and how many were written.
    plan: Vec<(String, u64)>,
    next: usize,
}

/// The header of `tensors` (name, shape) laid out back to back in the given order, padded with
/// spaces to a multiple of 8 bytes as the safetensors library does.
pub fn header(tensors: &[(String, Vec<u64>)]) -> Result<Vec<u8>> {
    let mut map = Map::new();
    let mut at = 0u64;
    for (name, shape) in tensors {
        let size = shape.iter().product::<u64>() * 4;
        let info = json!({"dtype": "F32", "shape": shape, "data_offsets": [at, at + size]});
        if map.insert(name.clone(), info).is_some() {
            bail!("tensor {name} planned twice");
        }
        at += size;
    }
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut bytes = serde_json::to_vec(&Value::Object(map))?;
    while (8 + bytes.len()) % 8 != 0 {
        bytes.push(b' ');
    }
    Ok(bytes)
}

impl Writer {
    pub fn create(path: &Path, tensors: &[(String, Vec<u64>)]) -> Result<Self> {
        let head = header(tensors)?;
        let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(&(head.len() as u64).to_le_bytes())?;
        out.write_all(&head)?;
        let plan = tensors
            .iter()
            .map(|(n, s)| (n.clone(), s.iter().product::<u64>() * 4))
            .collect();
        Ok(Self { out, plan, next: 0 })
    }

    /// Appends the next planned tensor (little-endian f32 bytes).
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some((want, size)) = self.plan.get(self.next) else {
            bail!("tensor {name} was not planned");
        };
        if want != name || *size != bytes.len() as u64 {
            bail!(
                "tensor {name} ({} bytes) written where {want} ({size} bytes) was planned",
                bytes.len()
            );
        }
        self.out.write_all(bytes)?;
        self.next += 1;
        Ok(())
    }

    /// Flushes and syncs; every planned tensor must have been written.
    pub fn finish(self) -> Result<()> {
        if self.next != self.plan.len() {
            bail!("{} of {} tensors written", self.next, self.plan.len());
        }
        let f = self.out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_file_safetensors_reads() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m.safetensors");
        let plan = vec![("b".to_string(), vec![2, 2]), ("a".to_string(), vec![3])];
        let mut w = Writer::create(&path, &plan)?;
        assert!(w.write("a", &[0; 12]).is_err(), "out of order");
        let b: Vec<u8> = [1f32, 2., 3., 4.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        w.write("b", &b)?;
        w.write("a", &[0; 12])?;
        w.finish()?;
        let t = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)?;
        assert_eq!(t["b"].to_vec2::<f32>()?, [[1., 2.], [3., 4.]]);
        assert_eq!(t["a"].dims(), [3]);
        let bytes = std::fs::read(&path)?;
        let n = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        assert_eq!((8 + n) % 8, 0);
        assert_eq!(bytes.len(), 8 + n + 28);
        Ok(())
    }
}
