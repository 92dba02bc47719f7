//! A streaming safetensors reader: each tensor is read from the file straight into its own
//! buffer. `candle_core::safetensors::load` reads the whole file into memory first and then
//! copies every tensor out of it, so loading e5-small (470 MB) peaked near twice its size; here
//! the peak is the weights themselves.
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use half::f16;

use super::word_table::{GridBuilder, WordTable, BLOCK};
use crate::{Error, Result};

#[derive(Deserialize)]
struct Info {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

fn dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

/// Every tensor of a safetensors file, validated against the header (names, dtypes, sizes,
/// offsets covering the data exactly) before anything large is allocated.
pub fn read(path: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    read_with(path, dev, super::build::F16_WORD_TABLE_MIN)
}

/// `read`, converting a word-embedding table of at least `f16_min` values to f16.
fn read_with(path: &Path, dev: &Device, f16_min: usize) -> Result<HashMap<String, Tensor>> {
    let bad = |m: String| Error::format("weights", path, m);
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("file shorter than the safetensors header".into()))?;
    let n = u64::from_le_bytes(len) as usize;
    if n > 100_000_000 || 8 + n > file_len {
        return Err(bad(format!("header of {n} bytes does not fit the file")));
    }
    let mut header = vec![0u8; n];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("reading the header: {e}")))?;
    let mut infos: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    infos.remove("__metadata__");
    let data_len = file_len - 8 - n;
    let mut parsed = Vec::with_capacity(infos.len());
    let mut covered = 0usize;
    for (name, v) in infos {
        let info: Info = serde_json::from_value(v).map_err(|e| bad(format!("{name}: {e}")))?;
        let dt = dtype(&info.dtype).ok_or_else(|| bad(format!("{name}: dtype {}", info.dtype)))?;
        let (start, end) = info.data_offsets;
        let numel: usize = info.shape.iter().product();
        if start > end || end > data_len || end - start != numel * dt.size_in_bytes() {
            return Err(bad(format!(
                "{name}: offsets {start}..{end} do not hold {numel} {} values in {data_len} bytes",
                info.dtype
            )));
        }
        covered += end - start;
        parsed.push((name, dt, info.shape, start, end));
    }
    if covered != data_len {
        return Err(bad(format!(
            "tensors cover {covered} of {data_len} data bytes (truncated or overlapping)"
        )));
    }
    parsed.sort_by_key(|p| p.3);
    let mut out = HashMap::with_capacity(parsed.len());
    for (name, dt, shape, start, end) in parsed {
        f.seek(SeekFrom::Start((8 + n + start) as u64))
            .map_err(|e| Error::io(path, e))?;
        let numel = shape.iter().product::<usize>();
        if dt == DType::F32 && name.ends_with("word_embeddings.weight") && numel >= f16_min {
            read_word_table(&mut f, &shape, dev)
                .map_err(|e| bad(format!("{name}: {e}")))?
                .insert_into(&mut out, name);
            continue;
        }
        let t = if dt == DType::F32 {
            let mut v = vec![0f32; (end - start) / 4];
            f.read_exact(bytemuck::cast_slice_mut(&mut v))
                .map_err(|e| bad(format!("{name}: {e}")))?;
            v.iter_mut()
                .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
            Tensor::from_vec(v, shape, dev)?
        } else {
            let mut bytes = vec![0u8; end - start];
            f.read_exact(&mut bytes)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            Tensor::from_raw_buffer(&bytes, dt, &shape, dev)?
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// A large f32 word table, read a chunk at a time into its compact form (the f32 table never
/// exists in memory): a grid table while every block lies on a grid (a model saved from
/// e5-small's Q4_0 values comes back exactly), f16 from the first block that does not.
fn read_word_table(f: &mut File, shape: &[usize], dev: &Device) -> std::io::Result<WordTable> {
    const CHUNK: usize = 1 << 18; // values; a multiple of BLOCK
    let numel: usize = shape.iter().product();
    let grid_shape = match shape {
        [v, h] if h % BLOCK == 0 => Some((*v, *h)),
        _ => None,
    };
    let mut grid = grid_shape.map(|_| GridBuilder::with_capacity(numel));
    let mut half: Vec<f16> = Vec::new();
    let mut buf = vec![0f32; CHUNK];
    let mut left = numel;
    while left > 0 {
        let chunk = &mut buf[..left.min(CHUNK)];
        f.read_exact(bytemuck::cast_slice_mut(chunk))?;
        chunk
            .iter_mut()
            .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
        left -= chunk.len();
        let mut rest: &[f32] = chunk;
        if let Some(g) = grid.as_mut() {
            let on_grid = rest.chunks(BLOCK).take_while(|b| g.push(b)).count();
            rest = &rest[(on_grid * BLOCK).min(rest.len())..];
            if rest.is_empty() {
                continue;
            }
            half.reserve_exact(numel);
            half.extend(g.values().map(f16::from_f32));
            grid = None;
        }
        half.extend(rest.iter().map(|&x| f16::from_f32(x)));
    }
    let to_io = |e: crate::Error| std::io::Error::other(e.to_string());
    match (grid, grid_shape) {
        (Some(g), Some((v, h))) => g.finish(v, h, dev).map_err(to_io),
        _ => Ok(WordTable::Dense(
            Tensor::from_vec(half, shape, dev).map_err(|e| to_io(e.into()))?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_candle_writes_and_narrows_the_word_table() -> Result<()> {
        let dev = Device::Cpu;
        let word = Tensor::arange(0f32, 600_000.0, &dev)?
            .affine(1e-3, -7.0)?
            .reshape((1000, 600))?;
        let other = Tensor::new(&[[1f32, -2.5], [3.0, 4.0]], &dev)?;
        let ids = Tensor::new(&[7i64, 9], &dev)?;
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let path = dir.path().join("m.safetensors");
        let map: HashMap<String, Tensor> = [
            ("emb.word_embeddings.weight".to_string(), word.clone()),
            ("x".to_string(), other.clone()),
            ("ids".to_string(), ids.clone()),
        ]
        .into();
        candle_core::safetensors::save(&map, &path)?;
        let full = read_with(&path, &dev, usize::MAX)?;
        let narrow = read_with(&path, &dev, 1000)?;
        for m in [&full, &narrow] {
            assert_eq!(m["x"].to_vec2::<f32>()?, other.to_vec2::<f32>()?);
            assert_eq!(m["ids"].to_vec1::<i64>()?, vec![7, 9]);
        }
        let w = &full["emb.word_embeddings.weight"];
        assert_eq!(w.to_vec2::<f32>()?, word.to_vec2::<f32>()?);
        let h = &narrow["emb.word_embeddings.weight"];
        assert_eq!(h.dtype(), DType::F16);
        let want = word.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        assert_eq!(
            h.to_dtype(DType::F32)?.to_vec2::<f32>()?,
            want.to_vec2::<f32>()?
        );
        Ok(())
    }

    /// A table on a block grid (as saved from Q4_0 values) comes back as a grid table, value
    /// for value; one block off grid after the first read chunk makes the whole table f16.
    #[test]
    fn a_grid_table_is_kept_exactly_and_an_off_grid_block_falls_back_to_f16() -> Result<()> {
        let dev = Device::Cpu;
        let (v, h) = (700, 512); // 358,400 values: more than one read chunk
        let d = half::f16::from_f32(0.0173).to_f32();
        let values: Vec<f32> = (0..v * h)
            .map(|i| ((i * 7 + i / BLOCK) % 16) as f32 - 8.0)
            .enumerate()
            .map(|(i, k)| k * d * (1 + i / BLOCK % 3) as f32)
            .collect();
        let mut off = values.clone();
        off[v * h - 5] = 1e-3;
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        for (table, on_grid) in [(&values, true), (&off, false)] {
            let path = dir.path().join("m.safetensors");
            let word = Tensor::from_vec(table.clone(), (v, h), &dev)?;
            let name = "emb.word_embeddings.weight".to_string();
            candle_core::safetensors::save(&HashMap::from([(name.clone(), word)]), &path)?;
            let m = read_with(&path, &dev, 1000)?;
            let t = WordTable::from_map(&m, &name)?;
            let back = t.to_f32()?.flatten_all()?.to_vec1::<f32>()?;
            if on_grid {
                assert!(matches!(t, WordTable::Grid { .. }) && m.len() == 2);
                assert_eq!(back, values);
            } else {
                assert!(matches!(t, WordTable::Dense(ref w) if w.dtype() == DType::F16));
                let want: Vec<f32> = off.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
                assert_eq!(back, want);
            }
        }
        Ok(())
    }
}
