//! The word-embedding table: most of a multilingual encoder's memory (e5-small: 250k × 384)
//! and frozen everywhere, so it is kept in the most compact form that loses nothing, and only
//! the rows a batch looks up are widened to f32.
//!
//! A table whose values lie on a per-block grid (each run of 32 values in a row is k · s for
//! integers k in −127..=127 and one scale s: e5-small's Q4_0 weights, and a model saved from
//! them in f32) is stored as one byte per value plus an f32 scale per block — 108 MB for
//! e5-small instead of 192 MB in f16, and exact where f16 rounded. Any other large table is
//! kept in f16, small ones in f32.
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Values per scale.
pub const BLOCK: usize = 32;
/// A stored code is k + OFFSET, so k = −127..=127 fits a byte.
const OFFSET: f32 = 128.0;
/// The map key of a grid table's scales: the weight's name with this in place of `weight`.
pub const SCALES: &str = "scales";

/// The name of the scales tensor that goes with the word table `weight_name`.
pub fn scales_name(weight_name: &str) -> String {
    match weight_name.strip_suffix("weight") {
        Some(stem) => format!("{stem}{SCALES}"),
        None => format!("{weight_name}.{SCALES}"),
    }
}

#[derive(Debug, Clone)]
pub enum WordTable {
    /// (vocab, hidden), f32 or f16.
    Dense(Tensor),
    /// codes (vocab, hidden) u8 holding k + 128; scales (vocab, hidden / 32) f32.
    Grid { codes: Tensor, scales: Tensor },
}

impl WordTable {
    /// Assembles a grid table, checking the two parts fit each other.
    pub fn grid(codes: Tensor, scales: Tensor) -> Result<Self> {
        let (v, h) = codes.dims2()?;
        if codes.dtype() != DType::U8
            || h % BLOCK != 0
            || scales.dims() != [v, h / BLOCK]
            || scales.dtype() != DType::F32
        {
            return Err(Error::Mismatch(format!(
                "grid word table: codes {:?} {:?} and scales {:?} {:?} do not fit \
                 (u8 (vocab, hidden), f32 (vocab, hidden / {BLOCK}))",
                codes.dims(),
                codes.dtype(),
                scales.dims(),
                scales.dtype()
            )));
        }
        Ok(Self::Grid { codes, scales })
    }

    /// The table stored under `name` in `map`: a u8 tensor with its scales beside it is a
    /// grid table, anything else dense.
    pub fn from_map(map: &HashMap<String, Tensor>, name: &str) -> Result<Self> {
        let t = map
            .get(name)
            .ok_or_else(|| Error::Mismatch(format!("weight `{name}` is missing")))?;
        if t.dtype() != DType::U8 {
            return Ok(Self::Dense(t.clone()));
        }
        let scales = map.get(&scales_name(name)).ok_or_else(|| {
            Error::Mismatch(format!(
                "u8 word table `{name}` has no `{}`",
                scales_name(name)
            ))
        })?;
        Self::grid(t.clone(), scales.clone())
    }

    /// Stores the table in `map` under `name` the way `from_map` reads it back: a dense
    /// tensor as is, a grid table as its codes with the scales beside them.
    pub fn insert_into(self, map: &mut HashMap<String, Tensor>, name: String) {
        match self {
            Self::Dense(t) => {
                map.insert(name, t);
            }
            Self::Grid { codes, scales } => {
                map.insert(scales_name(&name), scales);
                map.insert(name, codes);
            }
        }
    }

    pub fn dims(&self) -> &[usize] {
        match self {
            Self::Dense(t) => t.dims(),
            Self::Grid { codes, .. } => codes.dims(),
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            Self::Dense(t) => t.device(),
            Self::Grid { codes, .. } => codes.device(),
        }
    }

    /// Number of embedding values (vocab × hidden).
    pub fn elem_count(&self) -> usize {
        self.dims().iter().product()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Self::Grid { codes, scales } => codes.elem_count() + 4 * scales.elem_count(),
        }
    }

    /// Rows `ids` (a flat u32 tensor) as f32 (len, hidden).
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(t) => Ok(t.index_select(ids, 0)?.to_dtype(DType::F32)?),
            Self::Grid { codes, scales } => {
                let h = codes.dim(1)?;
                let n = ids.elem_count();
                // k and k · s are exact in f32 (|k| < 2^7, s carries ≤ 24 bits): the stored
                // values come back bit for bit.
                let k = codes
                    .index_select(ids, 0)?
                    .to_dtype(DType::F32)?
                    .affine(1.0, -f64::from(OFFSET))?;
                let s = scales.index_select(ids, 0)?;
                let v = k
                    .reshape((n, h / BLOCK, BLOCK))?
                    .broadcast_mul(&s.unsqueeze(2)?)?;
                Ok(v.reshape((n, h))?)
            }
        }
    }

    /// The whole table in f32 (for saving).
    pub fn to_f32(&self) -> Result<Tensor> {
        match self {
            Self::Dense(t) => Ok(t.to_dtype(DType::F32)?),
            Self::Grid { codes, .. } => {
                let (v, h) = codes.dims2()?;
                // A row slice at a time would bound the peak; saving is rare and writes f32.
                let ids = Tensor::arange(0u32, v as u32, codes.device())?;
                Ok(self.lookup(&ids)?.reshape((v, h))?)
            }
        }
    }
}

/// Builds a grid table block by block; gives up (returns false) at the first block off grid.
#[derive(Debug, Default)]
pub struct GridBuilder {
    codes: Vec<u8>,
    scales: Vec<f32>,
}

impl GridBuilder {
    pub fn with_capacity(values: usize) -> Self {
        Self {
            codes: Vec::with_capacity(values),
            scales: Vec::with_capacity(values / BLOCK),
        }
    }

    /// Adds a block of `BLOCK` values if they lie on a grid; false (and nothing added) if not.
    pub fn push(&mut self, block: &[f32]) -> bool {
        debug_assert_eq!(block.len(), BLOCK);
        let Some(s) = grid_scale(block) else {
            return false;
        };
        self.scales.push(s);
        self.codes.extend(block.iter().map(|&v| {
            let k = if s == 0.0 { 0.0 } else { (v / s).round() };
            (k + OFFSET) as u8
        }));
        true
    }

    /// Adds a block as integers k (−127..=127) and a scale, as a quantised file stores it.
    pub fn push_coded(&mut self, k: impl IntoIterator<Item = i8>, scale: f32) {
        self.scales.push(scale);
        self.codes
            .extend(k.into_iter().map(|k| (f32::from(k) + OFFSET) as u8));
    }

    /// The blocks added so far, as f32 values in order (when a later block is off grid).
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        self.codes
            .chunks_exact(BLOCK)
            .zip(&self.scales)
            .flat_map(|(c, &s)| c.iter().map(move |&c| (f32::from(c) - OFFSET) * s))
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The (vocab, hidden) table on `dev`.
    pub fn finish(self, vocab: usize, hidden: usize, dev: &Device) -> Result<WordTable> {
        if self.codes.len() != vocab * hidden || hidden % BLOCK != 0 {
            return Err(Error::Mismatch(format!(
                "grid word table: {} values for ({vocab}, {hidden})",
                self.codes.len()
            )));
        }
        let codes = Tensor::from_vec(self.codes, (vocab, hidden), dev)?;
        let scales = Tensor::from_vec(self.scales, (vocab, hidden / BLOCK), dev)?;
        WordTable::grid(codes, scales)
    }
}

/// The scale s > 0 with every value exactly k · s, |k| ≤ 127 (0 for an all-zero block), if any.
/// The value of largest magnitude is n · s for some n in 1..=127; each n is tried until every
/// value is reproduced bit for bit. Off-grid data fails within the first block.
pub fn grid_scale(block: &[f32]) -> Option<f32> {
    let m = block.iter().fold(0f32, |m, &v| m.max(v.abs()));
    if !m.is_finite() {
        return None;
    }
    if m == 0.0 {
        return Some(0.0);
    }
    (1..=127u8).map(|n| m / f32::from(n)).find(|&s| {
        s.is_normal()
            && block.iter().all(|&v| {
                let k = (v / s).round();
                k.abs() <= 127.0 && k * s == v
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[Vec<f32>]) -> (Vec<f32>, usize, usize) {
        let h = rows[0].len();
        (rows.concat(), rows.len(), h)
    }

    #[test]
    fn a_grid_table_gives_its_values_back_exactly() -> Result<()> {
        // Q4_0-like blocks: (q − 8) · d with an odd f16 scale, one all-zero block, one negative
        // scale's worth of signs.
        let d = half::f16::from_f32(0.0123).to_f32();
        let row = |shift: usize| -> Vec<f32> {
            (0..2 * BLOCK)
                .map(|j| (((j + shift) % 16) as f32 - 8.0) * d * if j < BLOCK { 1.0 } else { -3.0 })
                .collect()
        };
        let mut zero = row(3);
        zero[BLOCK..].fill(0.0);
        let (values, v, h) = table(&[row(0), row(5), zero]);
        let mut b = GridBuilder::with_capacity(values.len());
        for block in values.chunks(BLOCK) {
            assert!(b.push(block));
        }
        assert_eq!(b.values().collect::<Vec<_>>(), values);
        let t = b.finish(v, h, &Device::Cpu)?;
        assert_eq!(t.bytes(), v * h + 4 * v * h / BLOCK);
        let ids = Tensor::new(&[2u32, 0, 0, 1], &Device::Cpu)?;
        let got = t.lookup(&ids)?.to_vec2::<f32>()?;
        for (g, &i) in got.iter().zip(&[2usize, 0, 0, 1]) {
            assert_eq!(g[..], values[i * h..(i + 1) * h]);
        }
        assert_eq!(t.to_f32()?.flatten_all()?.to_vec1::<f32>()?, values);
        Ok(())
    }

    #[test]
    fn off_grid_values_are_refused() {
        let mut block: Vec<f32> = (0..BLOCK).map(|j| j as f32 * 0.25).collect();
        assert!(grid_scale(&block).is_some());
        block[7] = 1.7e-3; // not a multiple of any m / n
        assert_eq!(grid_scale(&block), None);
        block[7] = f32::NAN;
        assert_eq!(grid_scale(&block), None);
        let mut b = GridBuilder::default();
        assert!(!b.push(&block));
        assert!(b.is_empty());
    }

    #[test]
    fn mismatched_parts_are_a_typed_error() -> Result<()> {
        let dev = Device::Cpu;
        let codes = Tensor::zeros((4, 64), DType::U8, &dev)?;
        let bad = Tensor::zeros((4, 3), DType::F32, &dev)?;
        assert!(WordTable::grid(codes.clone(), bad).is_err());
        let map: HashMap<String, Tensor> = [("w.weight".to_string(), codes)].into();
        assert!(WordTable::from_map(&map, "w.weight").is_err());
        assert_eq!(
            scales_name("a.word_embeddings.weight"),
            "a.word_embeddings.scales"
        );
        Ok(())
    }
}
