//! AdaLoRA's orthogonal regulariser (peft `AdaLoraModel.forward`): P and Q of P·Λ·Q are pushed
//! towards orthonormal columns / rows so that Λ stays a set of singular values. It adds
//! `orth_reg_weight` × the mean over every A (Q, r × in) of ‖A Aᵀ − I‖_F and every B (P,
//! out × r) of ‖Bᵀ B − I‖_F to the loss — the Frobenius norm itself, not its square.
use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// The mean of the two norms over all `(a, b)` pairs (a scalar tensor on their device).
pub fn orthogonal_penalty(pairs: &[(&Tensor, &Tensor)]) -> Result<Tensor> {
    let Some(&(first, _)) = pairs.first() else {
        return Err(Error::Mismatch(
            "AdaLoRA's orthogonal regulariser needs at least one adapter".into(),
        ));
    };
    let mut total = Tensor::zeros((), DType::F32, first.device())?;
    for (a, b) in pairs {
        for cov in [a.matmul(&a.t()?)?, b.t()?.matmul(b)?] {
            let eye = Tensor::eye(cov.dim(0)?, cov.dtype(), cov.device())?;
            let norm = (cov - eye)?.sqr()?.sum_all()?.sqrt()?;
            total = (total + norm)?;
        }
    }
    Ok((total / (2 * pairs.len()) as f64)?)
}
