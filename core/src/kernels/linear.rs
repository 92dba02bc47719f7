//! y = x·Wᵀ + b for a frozen W: the backward pass returns the input's gradient only. candle's
//! own matmul would also compute (and keep until the step ends) a full-size gradient of W.
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

struct FrozenLinear {
    /// (out, in)
    w: Tensor,
    /// (out,)
    b: Option<Tensor>,
}

fn cpu_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, d_in) = l.shape().dims2()?;
        let (d_out, w_in) = self.w.dims2()?;
        if w_in != d_in {
            candle_core::bail!("frozen-linear: input has {d_in} features, weight {w_in}");
        }
        let (ws, wl) = self.w.storage_and_layout();
        let Storage::Cpu(w) = &*ws else {
            candle_core::bail!("frozen-linear: weight is not on the CPU")
        };
        let mut y = s.matmul(w, (1, n, d_out, d_in), l, &wl.transpose(0, 1)?)?;
        if let (Some(b), CpuStorage::F32(v)) = (&self.b, &mut y) {
            let b = cpu_vec(b)?;
            pulp::Arch::new().dispatch(|| {
                for row in v.chunks_exact_mut(d_out) {
                    for (y, b) in row.iter_mut().zip(&b) {
                        *y += b;
                    }
                }
            });
        }
        Ok((y, Shape::from((n, d_out))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.matmul(&self.w)?))
    }
}

/// x: (n, in) contiguous f32 on the CPU; w: (out, in); b: (out,). Returns (n, out).
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    x.apply_op1(FrozenLinear {
        w: w.clone(),
        b: b.cloned(),
    })
}
