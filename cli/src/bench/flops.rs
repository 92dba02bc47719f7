//! Analytic FLOP counts of the benchmarked workloads (multiply-add = 2 FLOPs).
//!
//! Forward, batch b × t tokens, hidden h, per adapted linear (in, out) with `rows` input rows
//! (b·t for encoder linears, b for pooler and classifier, which see the first token only):
//!   linear    = Σ 2·rows·in·out
//!   attention = Σ_layers 4·b·t²·h            (Q·Kᵀ and P·V)
//!   adapter   = Σ 2·rows·r·(in+out)          (x·Aᵀ, then ·Bᵀ; zero without adapters)
//! Training step = forward + backward. The backward of a frozen linear computes only the input
//! gradient (1× its forward), attention and adapters need input and parameter gradients (2×):
//!   train = 2·linear + 3·attention + 3·adapter
//! i.e. "3× forward minus the frozen-weight gradients". Element-wise ops (softmax, LayerNorm,
//! GELU, the priors, AdamW) are not counted, so achieved GFLOP/s is a slight underestimate.
use fedp2eft_core::model::SeqClassifier;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Flops {
    pub linear: f64,
    pub attention: f64,
    pub adapter: f64,
}

impl Flops {
    pub fn forward(&self) -> f64 {
        self.linear + self.attention + self.adapter
    }
    pub fn train_step(&self) -> f64 {
        2.0 * self.linear + 3.0 * (self.attention + self.adapter)
    }
}

/// FLOPs of one forward pass of `model` on a (batch, seq) batch, with rank-`r` adapters on
/// every adapted linear (`r = 0`: none).
pub fn count(model: &SeqClassifier, batch: usize, seq: usize, r: usize) -> Flops {
    let encoder_linears = model.layers.len() * 6;
    let mut f = Flops::default();
    for l in model.linears() {
        let rows = if l.index < encoder_linears {
            batch * seq
        } else {
            batch
        } as f64;
        let (i, o) = (l.in_features() as f64, l.out_features() as f64);
        f.linear += 2.0 * rows * i * o;
        f.adapter += 2.0 * rows * r as f64 * (i + o);
    }
    let h = model.config.hidden_size as f64;
    let (b, t) = (batch as f64, seq as f64);
    f.attention = model.layers.len() as f64 * 4.0 * b * t * t * h;
    f
}

/// The formula as recorded in every result file.
pub const FORMULA: &str = "forward = Σ_linears 2·rows·in·out + Σ_layers 4·b·t²·h \
    (+ Σ 2·rows·r·(in+out) with adapters), rows = b·t (b for pooler/classifier); \
    train step = 2·linear + 3·attention + 3·adapter (frozen weights get no weight gradient); \
    element-wise ops not counted";
