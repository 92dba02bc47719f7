//! Size limits applied before anything in a payload is parsed or allocated.
use crate::PsgSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole body, bytes. Checked first, so nothing larger is ever parsed.
    pub max_bytes: usize,
    /// safetensors JSON header, bytes. A PSG header (5 tensors + metadata) is ~1 KiB; the
    /// bound keeps a hostile header from costing more than a small JSON parse.
    pub max_header_bytes: usize,
    /// Largest `num_samples` an update may claim: bounds one client's FedAvg weight.
    pub max_num_samples: u64,
}

impl Default for Limits {
    /// Generous enough for a Llama-3.2-3B PSG (≈ 80 MB of f32); a server should prefer
    /// `Limits::for_spec` with its run's spec.
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_header_bytes: 64 << 10,
            max_num_samples: 1_000_000_000,
        }
    }
}

impl Limits {
    /// The tightest body limit for payloads of this spec: 8-byte length prefix, header, data.
    pub fn for_spec(spec: &PsgSpec) -> Self {
        let d = Self::default();
        Self {
            max_bytes: spec
                .data_bytes()
                .saturating_add(d.max_header_bytes)
                .saturating_add(8),
            ..d
        }
    }
}
