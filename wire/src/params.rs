//! PSG parameters as plain data: an ordered map name → f32 tensor (shape + row-major values).
//! No candle here: core converts to and from its `Var`s, the server only averages.
use crate::{Error, PsgSpec, Result};

/// A dense f32 tensor; `data.len()` always equals the product of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl TensorData {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n = elements(&shape)?;
        if n != data.len() {
            return Err(Error::InvalidSpec(format!(
                "shape {shape:?} holds {n} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Result<Self> {
        let n = elements(&shape)?;
        Ok(Self {
            shape,
            data: vec![0.0; n],
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Values may change, the shape may not.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The first NaN or ±Inf as (flat index, value).
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        self.data
            .iter()
            .copied()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
    }
}

fn elements(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::InvalidSpec(format!("shape {shape:?} overflows")))
}

/// Named tensors in a fixed order (insertion order; spec order after decoding).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PsgParams {
    tensors: Vec<(String, TensorData)>,
}

impl PsgParams {
    /// Zero tensors with the spec's names and shapes.
    pub fn zeros(spec: &PsgSpec) -> Result<Self> {
        let mut p = Self::default();
        for (name, shape) in spec.tensors() {
            p.insert(name.clone(), TensorData::zeros(shape.clone())?)?;
        }
        Ok(p)
    }

    /// Appends a tensor; a name already present is an error (never a silent overwrite).
    pub fn insert(&mut self, name: impl Into<String>, tensor: TensorData) -> Result<()> {
        let name = name.into();
        if self.get(&name).is_some() {
            return Err(Error::DuplicateTensor { name });
        }
        self.tensors.push((name, tensor));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut TensorData> {
        self.tensors
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorData)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn num_elements(&self) -> usize {
        self.tensors.iter().map(|(_, t)| t.data.len()).sum()
    }

    /// The first NaN or ±Inf, as the error that names it.
    pub fn check_finite(&self) -> Result<()> {
        for (name, t) in &self.tensors {
            if let Some((index, value)) = t.first_non_finite() {
                return Err(Error::NonFinite {
                    name: name.clone(),
                    index,
                    value,
                });
            }
        }
        Ok(())
    }

    /// Bitwise equality (distinguishes -0.0 from 0.0; NaN payloads compare as bits).
    pub fn bit_eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.iter().zip(other.iter()).all(|((n, a), (m, b))| {
                n == m
                    && a.shape == b.shape
                    && a.data
                        .iter()
                        .zip(&b.data)
                        .all(|(x, y)| x.to_bits() == y.to_bits())
            })
    }

    pub fn into_tensors(self) -> Vec<(String, TensorData)> {
        self.tensors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_keep_shape_and_order() -> Result<()> {
        assert!(matches!(
            TensorData::new(vec![2, 2], vec![0.0; 3]),
            Err(Error::InvalidSpec(_))
        ));
        assert!(TensorData::zeros(vec![usize::MAX, 2]).is_err());
        let mut p = PsgParams::default();
        p.insert("b", TensorData::new(vec![2], vec![1.0, 2.0])?)?;
        p.insert("a", TensorData::zeros(vec![1])?)?;
        assert_eq!(p.names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(
            p.insert("a", TensorData::zeros(vec![1])?),
            Err(Error::DuplicateTensor { name: "a".into() })
        );
        assert_eq!(p.num_elements(), 3);
        if let Some(t) = p.get_mut("a") {
            t.data_mut()[0] = f32::NEG_INFINITY;
        }
        assert!(matches!(
            p.check_finite(),
            Err(Error::NonFinite { ref name, index: 0, .. }) if name == "a"
        ));
        Ok(())
    }
}
