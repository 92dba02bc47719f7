//! FedAvg (method.md §3.4): the sample-weighted mean Σ n_c·φ_c / Σ n_c of the clients' PSG
//! parameters (of weights, not deltas; server learning rate 1). Sums are kept in f64 and cast
//! to f32 once at the end, so the order updates arrive in changes nothing but f64 rounding.
//! The arithmetic runs with subnormals flushed (fedp2eft-fpenv), as on the clients: a subnormal
//! input counts as 0 and a mean below f32's smallest normal (≈ 1.2e-38) comes out as 0.
use crate::{Error, PsgParams, PsgSpec, Result, TensorData};

/// FedAvg of `(params, num_samples)` pairs.
pub fn fedavg(updates: &[(&PsgParams, u64)]) -> Result<PsgParams> {
    let mut acc = FedAvgAccumulator::new();
    for (params, n) in updates {
        acc.add(params, *n)?;
    }
    acc.finish()
}

/// Streaming FedAvg: `add` updates one at a time (in any order), then `finish`.
#[derive(Debug, Clone, Default)]
pub struct FedAvgAccumulator {
    spec: Option<PsgSpec>,
    /// Σ n_c · φ_c per tensor, in spec order.
    sums: Vec<Vec<f64>>,
    /// u128 (saturating): no realistic number of u64 counts reaches its limit.
    total: u128,
    count: usize,
}

impl FedAvgAccumulator {
    /// The first update fixes the names and shapes the others must have.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every update must match `spec`.
    pub fn with_spec(spec: PsgSpec) -> Self {
        Self {
            sums: zero_sums(&spec),
            spec: Some(spec),
            ..Self::default()
        }
    }

    /// Adds n · φ. Checks names, shapes and finiteness first: a rejected update leaves the
    /// accumulator as it was. `n = 0` is allowed and contributes nothing.
    pub fn add(&mut self, params: &PsgParams, n: u64) -> Result<()> {
        let _flush = fedp2eft_fpenv::FlushGuard::new();
        if let Some(spec) = &self.spec {
            spec.check(params)?;
        }
        params.check_finite()?;
        if self.spec.is_none() {
            let spec = PsgSpec::of(params)?;
            self.sums = zero_sums(&spec);
            self.spec = Some(spec);
        }
        let names = self.spec.iter().flat_map(|s| s.tensors()).map(|(n, _)| n);
        let w = n as f64;
        for (name, sum) in names.zip(&mut self.sums) {
            let data = params
                .get(name)
                .ok_or_else(|| Error::MissingTensor(name.clone()))?
                .data();
            for (s, &x) in sum.iter_mut().zip(data) {
                *s += w * f64::from(x);
            }
        }
        self.total = self.total.saturating_add(u128::from(n));
        self.count += 1;
        Ok(())
    }

    /// Updates added so far.
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn total_samples(&self) -> u128 {
        self.total
    }

    /// Σ n_c·φ_c / Σ n_c, cast to f32.
    pub fn finish(self) -> Result<PsgParams> {
        let _flush = fedp2eft_fpenv::FlushGuard::new();
        let (Some(spec), 1..) = (self.spec, self.count) else {
            return Err(Error::EmptyAggregate);
        };
        if self.total == 0 {
            return Err(Error::ZeroTotalSamples { count: self.count });
        }
        let total = self.total as f64;
        let mut out = PsgParams::default();
        for ((name, shape), sum) in spec.tensors().iter().zip(self.sums) {
            // A weighted mean lies within the inputs' range, so the cast stays finite.
            let data = sum.into_iter().map(|s| (s / total) as f32).collect();
            out.insert(name.clone(), TensorData::new(shape.clone(), data)?)?;
        }
        Ok(out)
    }
}

fn zero_sums(spec: &PsgSpec) -> Vec<Vec<f64>> {
    spec.tensors()
        .iter()
        .map(|(_, shape)| vec![0.0; shape.iter().product()])
        .collect()
}
