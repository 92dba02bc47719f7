//! BT-LoRA adapter checks: analytic gradients of A, B and λ against central differences (f64),
//! merged forward equals adapter forward, and the prior terms equal hand-computed values.
use candle_core::{Device, Tensor, Var};
use fedp2eft_core::adapter::{clamp_ste, prior_terms, BtLora, Lambda, PriorConfig, PriorTerm};
use fedp2eft_core::model::AdaptedLinear;
use rand::{Rng, SeedableRng};

fn rand_t(shape: (usize, usize), rng: &mut impl Rng) -> anyhow::Result<Tensor> {
    let v: Vec<f64> = (0..shape.0 * shape.1)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

struct Setup {
    layer: AdaptedLinear,
    x: Tensor,
    c: Tensor,
    b0: Tensor,
}

fn setup() -> anyhow::Result<Setup> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (d_in, d_out, r) = (7, 6, 3);
    let w = rand_t((d_out, d_in), &mut rng)?;
    let bias = Tensor::from_vec(vec![0.1f64; d_out], d_out, &Device::Cpu)?;
    let mut layer = AdaptedLinear::new("t".into(), 0, w, Some(bias))?;
    let a = rand_t((r, d_in), &mut rng)?;
    let lambda = Var::from_tensor(&Tensor::new(&[0.7f64, 1.3, 0.2], &Device::Cpu)?)?;
    let ad = BtLora::new(&a, d_out, Lambda::Trainable(lambda), 2.0)?;
    ad.b.set(&rand_t((d_out, r), &mut rng)?)?; // nonzero B so every gradient is exercised
    layer.adapter = Some(ad);
    Ok(Setup {
        layer,
        x: rand_t((5, d_in), &mut rng)?,
        c: rand_t((5, d_out), &mut rng)?,
        b0: rand_t((d_out, r), &mut rng)?.affine(0.1, 0.0)?,
    })
}

/// Scalar loss: Σ c ⊙ layer(x) + both priors (N = 5).
fn loss(s: &Setup) -> anyhow::Result<Tensor> {
    let y = s.layer.forward(&s.x, None)?;
    let ad = s.layer.adapter.as_ref().expect("adapter");
    let term = PriorTerm {
        b: ad.b.as_tensor(),
        b0: &s.b0,
        lambda: ad.lambda.tensor(),
    };
    let (sig, sp) = prior_terms(&[term], 5, &PriorConfig::default())?;
    Ok(((y * &s.c)?.sum_all()? + sig)?.add(&sp)?)
}

#[test]
fn gradients_of_a_b_lambda_match_central_differences() -> anyhow::Result<()> {
    let _compute = fedp2eft_core::runtime::enter(); // as every core computation runs
    let s = setup()?;
    let mut worst = 0f64;
    let ad = s.layer.adapter.clone().expect("adapter");
    let Lambda::Trainable(lam) = &ad.lambda else {
        unreachable!()
    };
    let grads = loss(&s)?.backward()?;
    for (name, var) in [("A", &ad.a), ("B", &ad.b), ("lambda", lam)] {
        let g = grads
            .get(var.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let shape = var.shape().clone();
        for i in 0..base.len() {
            let h = 1e-6;
            let eval = |delta: f64| -> anyhow::Result<f64> {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu)?)?;
                Ok(loss(&s)?.to_scalar::<f64>()?)
            };
            let num = (eval(h)? - eval(-h)?) / (2.0 * h);
            var.set(&Tensor::from_vec(
                base.clone(),
                shape.clone(),
                &Device::Cpu,
            )?)?;
            let err = (num - g[i]).abs() / (1.0 + num.abs());
            assert!(err < 1e-6, "{name}[{i}]: analytic {} numeric {num}", g[i]);
            worst = worst.max(err);
        }
    }
    println!("worst relative gradient error {worst:.2e}");
    Ok(())
}

#[test]
fn merged_forward_equals_adapter_forward() -> anyhow::Result<()> {
    let s = setup()?;
    let unmerged = s.layer.forward(&s.x, None)?;
    let mut merged = s.layer.clone();
    merged.merge()?;
    assert!(merged.adapter.is_none());
    let diff = (merged.forward(&s.x, None)? - &unmerged)?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()?;
    assert!(diff < 1e-12, "max abs diff {diff}");
    // ΔW = (λ ⊙_col B)·A·scaling, checked element-wise by hand.
    let ad = s.layer.adapter.as_ref().expect("adapter");
    let (a, b) = (
        ad.a.as_tensor().to_vec2::<f64>()?,
        ad.b.as_tensor().to_vec2::<f64>()?,
    );
    let lam = ad.lambda.tensor().to_vec1::<f64>()?;
    let dw = ad.delta_weight()?.to_vec2::<f64>()?;
    for (o, row) in dw.iter().enumerate() {
        for (i, v) in row.iter().enumerate() {
            let want: f64 = (0..3).map(|j| b[o][j] * lam[j] * a[j][i]).sum::<f64>() * 2.0;
            assert!((v - want).abs() < 1e-12);
        }
    }
    Ok(())
}

#[test]
fn prior_terms_equal_hand_computed_values() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    // B (2×2), B0 = 0, λ = [0.5, 2.0]; N = 4; weights 100 / 0.01, β = 100.
    let b = Tensor::new(&[[1.0f64, -2.0], [0.5, 4.0]], &dev)?;
    let b0 = b.zeros_like()?;
    let lam = Tensor::new(&[0.5f64, 2.0], &dev)?;
    let (sig, sp) = prior_terms(
        &[PriorTerm {
            b: &b,
            b0: &b0,
            lambda: &lam,
        }],
        4,
        &PriorConfig::default(),
    )?;
    // Σ|B_ij|/λ_j = (1 + 0.5)/0.5 + (2 + 4)/2 = 3 + 3 = 6  → 100 · 6 / 4 = 150
    assert!((sig.to_scalar::<f64>()? - 150.0).abs() < 1e-9);
    // Σ (100 λ + ln λ) = 50 + ln 0.5 + 200 + ln 2 = 250 → 0.01 · 250 / 4 = 0.625
    assert!((sp.to_scalar::<f64>()? - 0.625).abs() < 1e-9);
    Ok(())
}

#[test]
fn clamp_ste_clamps_forward_and_passes_gradient_through() -> anyhow::Result<()> {
    let v = Var::from_tensor(&Tensor::new(&[-0.5f64, 0.3, 5000.0], &Device::Cpu)?)?;
    let c = clamp_ste(v.as_tensor(), 1e-4, 1000.0)?;
    let cv = c.to_vec1::<f64>()?;
    for (got, want) in cv.iter().zip([1e-4, 0.3, 1000.0]) {
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    let g = (c * Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu)?)?
        .sum_all()?
        .backward()?;
    let gv = g.get(v.as_tensor()).expect("grad").to_vec1::<f64>()?;
    assert_eq!(gv, vec![1.0, 2.0, 3.0]);
    Ok(())
}
