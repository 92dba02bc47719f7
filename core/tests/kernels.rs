//! The fused CPU kernels against the composite candle ops they replace: same values, same
//! gradients (candle's autograd of the composite form is the reference), on random inputs with
//! padding in the mask.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test here
use candle_core::{Device, Tensor, Var, D};
use fedp2eft_core::kernels;

const TOL: f32 = 2e-5;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Value and input gradient of f under the loss Σ y ⊙ w for a fixed random w.
fn value_and_grad(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let _compute = fedp2eft_core::runtime::enter(); // as every core computation runs
    let v = Var::from_tensor(x).unwrap();
    let y = f(v.as_tensor());
    let w = rand(y.dims(), 99);
    let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    (y.detach(), grads.get(&v).unwrap().clone())
}

fn assert_same(name: &str, fused: (Tensor, Tensor), composite: (Tensor, Tensor)) {
    let dv = max_diff(&fused.0, &composite.0);
    let dg = max_diff(&fused.1, &composite.1);
    println!("{name}: max |Δ| value {dv:.2e}, gradient {dg:.2e}");
    assert!(dv < TOL, "{name}: values differ by {dv}");
    assert!(dg < TOL, "{name}: gradients differ by {dg}");
}

#[test]
fn frozen_linear_matches_matmul_and_skips_the_weight_gradient() {
    let x = rand(&[37, 24], 1);
    let w = rand(&[40, 24], 2);
    let b = rand(&[40], 3);
    let fused = value_and_grad(&x, |x| kernels::frozen_linear(x, &w, Some(&b)).unwrap());
    let composite = value_and_grad(&x, |x| {
        x.matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap()
    });
    assert_same("frozen_linear", fused, composite);
    // The weight, when it is a variable, gets no gradient through the fused op.
    let wv = Var::from_tensor(&w).unwrap();
    let xv = Var::from_tensor(&x).unwrap();
    let y = kernels::frozen_linear(xv.as_tensor(), wv.as_tensor(), None).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(&wv).is_none());
    assert!(g.get(&xv).is_some());
}

#[test]
fn layer_norm_matches_the_composite_form() {
    let x = (rand(&[3, 11, 48], 4) * 3.0).unwrap();
    let g = rand(&[48], 5);
    let b = rand(&[48], 6);
    let eps = 1e-12;
    let fused = value_and_grad(&x, |x| kernels::layer_norm(x, &g, &b, eps).unwrap());
    let composite = value_and_grad(&x, |x| {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let xc = x.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let xn = xc
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap();
        xn.broadcast_mul(&g).unwrap().broadcast_add(&b).unwrap()
    });
    assert_same("layer_norm", fused, composite);
}

#[test]
fn masked_softmax_matches_the_composite_form() {
    let (b, h, t) = (3, 4, 9);
    let scores = rand(&[b, h, t, t], 7);
    // Row 1 pads its last 4 keys, row 2 its last one.
    let mut mask = vec![0f32; b * t];
    for k in 5..t {
        mask[t + k] = -1e9;
    }
    mask[2 * t + t - 1] = -1e9;
    let bias = Tensor::from_vec(mask, (b, 1, 1, t), &Device::Cpu).unwrap();
    let scale = 0.35;
    let fused = value_and_grad(&scores, |s| {
        kernels::masked_softmax(s, &bias, scale).unwrap()
    });
    let composite = value_and_grad(&scores, |s| {
        let z = (s * scale).unwrap().broadcast_add(&bias).unwrap();
        candle_nn::ops::softmax(&z, D::Minus1).unwrap()
    });
    assert_same("masked_softmax", fused, composite);
}

#[test]
fn gelu_matches_candle_gelu_erf() {
    let x = (rand(&[5, 300], 8) * 3.0).unwrap();
    let fused = value_and_grad(&x, |x| kernels::gelu(x).unwrap());
    let composite = value_and_grad(&x, |x| x.gelu_erf().unwrap());
    assert_same("gelu", fused, composite);
}

#[test]
fn kernels_reject_wrong_shapes() {
    let x = rand(&[4, 8], 9);
    assert!(kernels::frozen_linear(&x, &rand(&[5, 7], 10), None).is_err());
    assert!(kernels::layer_norm(&x, &rand(&[7], 11), &rand(&[7], 12), 1e-5).is_err());
    let s = rand(&[2, 1, 3, 3], 13);
    assert!(kernels::masked_softmax(&s, &rand(&[2, 1, 1, 4], 14), 1.0).is_err());
}

#[test]
fn the_weight_layout_changes_no_value_or_gradient() {
    for (out, inp) in [(24, 40), (32, 32), (40, 24)] {
        let w = rand(&[out, inp], 30);
        let laid = kernels::weight_layout(&w).unwrap();
        assert_eq!(laid.dims(), &[out, inp]);
        let transposed = laid.stride() == [1, out];
        assert_eq!(
            transposed,
            inp >= out,
            "{out}x{inp}: stored transposed iff in ≥ out"
        );
        assert_eq!(max_diff(&laid, &w), 0.0);
        let (x, b) = (rand(&[37, inp], 31), rand(&[out], 32));
        let (a_hat, lb) = (rand(&[5, inp], 33), rand(&[out, 5], 34));
        for lora in [false, true] {
            let run = |w: &Tensor| {
                value_and_grad(&x, |x| match lora {
                    true => kernels::lora_linear(x, w, Some(&b), &a_hat, &lb).unwrap(),
                    false => kernels::frozen_linear(x, w, Some(&b)).unwrap(),
                })
            };
            let name = format!("{out}x{inp} lora {lora}: laid out vs contiguous");
            assert_same(&name, run(&laid), run(&w));
        }
    }
}

#[test]
fn lora_linear_matches_the_composite_form_in_every_gradient() {
    let x = rand(&[3, 7, 24], 20);
    let w = rand(&[40, 24], 21);
    let b = rand(&[40], 22);
    let a = Var::from_tensor(&rand(&[5, 24], 23)).unwrap();
    let lb = Var::from_tensor(&rand(&[40, 5], 24)).unwrap();
    let lam = Var::from_tensor(&rand(&[5], 25)).unwrap();
    let wt = rand(&[3, 7, 40], 26);
    let run = |fused: bool| {
        let xv = Var::from_tensor(&x).unwrap();
        let s = (lam.as_tensor() * 2.0).unwrap();
        let y = if fused {
            let a_hat = a
                .as_tensor()
                .broadcast_mul(&s.unsqueeze(1).unwrap())
                .unwrap();
            kernels::lora_linear(xv.as_tensor(), &w, Some(&b), &a_hat, lb.as_tensor()).unwrap()
        } else {
            let x2 = xv.as_tensor().reshape((21, 24)).unwrap();
            let base = x2
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let h = x2
                .matmul(&a.as_tensor().t().unwrap())
                .unwrap()
                .broadcast_mul(&s)
                .unwrap();
            let u = h.matmul(&lb.as_tensor().t().unwrap()).unwrap();
            (base + u).unwrap().reshape((3, 7, 40)).unwrap()
        };
        let g = (&y * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = |v: &Var| g.get(v).unwrap().clone();
        (y.detach(), grad(&xv), grad(&a), grad(&lb), grad(&lam))
    };
    let (f, c) = (run(true), run(false));
    for (name, p, q) in [
        ("y", &f.0, &c.0),
        ("dx", &f.1, &c.1),
        ("dA", &f.2, &c.2),
        ("dB", &f.3, &c.3),
        ("dλ", &f.4, &c.4),
    ] {
        let scale = q
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1.0);
        let d = max_diff(p, q) / scale;
        assert!(d < 1e-5, "lora_linear {name}: relative difference {d}");
    }
}

#[test]
fn add_layer_norm_matches_the_composite_form() {
    let a = rand(&[2, 9, 32], 30);
    let x = rand(&[2, 9, 32], 31);
    let g = rand(&[32], 32);
    let b = rand(&[32], 33);
    let wt = rand(&[2, 9, 32], 34);
    let run = |fused: bool| {
        let (av, xv) = (Var::from_tensor(&a).unwrap(), Var::from_tensor(&x).unwrap());
        let y = if fused {
            kernels::add_layer_norm(av.as_tensor(), xv.as_tensor(), &g, &b, 1e-12).unwrap()
        } else {
            let z = (av.as_tensor() + xv.as_tensor()).unwrap();
            kernels::layer_norm(&z, &g, &b, 1e-12).unwrap()
        };
        let grads = (&y * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        let da = grads.get(&av).unwrap().clone();
        let dx = grads.get(&xv).unwrap().clone();
        (y.detach(), da, dx)
    };
    let (f, c) = (run(true), run(false));
    assert!(max_diff(&f.0, &c.0) < TOL);
    assert!(max_diff(&f.1, &c.1) < TOL);
    assert!(max_diff(&f.2, &c.2) < TOL);
}

#[test]
fn attention_matches_the_composite_form_in_every_gradient() {
    for tq in [7, 2] {
        attention_case(tq);
    }
}

/// `tq` queries (the first positions) against 7 keys.
fn attention_case(tq: usize) {
    let (b, t, heads, hd) = (3, 7, 4, 6);
    let h = heads * hd;
    let mut mask = vec![0f32; b * t];
    for k in 4..t {
        mask[t + k] = -1e9; // row 1 pads its last 3 keys
    }
    let bias = Tensor::from_vec(mask, (b, 1, 1, t), &Device::Cpu).unwrap();
    let (q0, k0, v0) = (
        rand(&[b, tq, h], 40),
        rand(&[b, t, h], 41),
        rand(&[b, t, h], 42),
    );
    let wt = rand(&[b, tq, h], 43);
    let scale = 1.0 / (hd as f64).sqrt();
    let run = |fused: bool| {
        let (q, k, v) = (
            Var::from_tensor(&q0).unwrap(),
            Var::from_tensor(&k0).unwrap(),
            Var::from_tensor(&v0).unwrap(),
        );
        let y = if fused {
            kernels::attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &bias,
                heads,
                scale,
            )
            .unwrap()
        } else {
            let split = |x: &Tensor, t: usize| {
                x.reshape((b, t, heads, hd))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (qh, kh, vh) = (
                split(q.as_tensor(), tq),
                split(k.as_tensor(), t),
                split(v.as_tensor(), t),
            );
            let s = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap();
            let p = candle_nn::ops::softmax(&s.broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
            let ctx = p.matmul(&vh).unwrap().transpose(1, 2).unwrap();
            ctx.reshape((b, tq, h)).unwrap()
        };
        let g = (&y * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = |x: &Var| g.get(x).unwrap().clone();
        (y.detach(), grad(&q), grad(&k), grad(&v))
    };
    let (f, c) = (run(true), run(false));
    for (name, p, q) in [
        ("ctx", &f.0, &c.0),
        ("dq", &f.1, &c.1),
        ("dk", &f.2, &c.2),
        ("dv", &f.3, &c.3),
    ] {
        let d = max_diff(p, q);
        assert!(d < TOL, "attention {name}: differs by {d}");
    }
}

#[test]
fn linear_of_gelu_equals_gelu_then_linear_in_every_gradient() {
    let z0 = (rand(&[2, 5, 24], 50) * 2.0).unwrap();
    let w = rand(&[16, 24], 51);
    let b = rand(&[16], 52);
    let a0 = rand(&[3, 24], 53);
    let b0 = rand(&[16, 3], 54);
    let wt = rand(&[2, 5, 16], 55);
    for with_lora in [false, true] {
        let run = |fused: bool| {
            let (z, a, lb) = (
                Var::from_tensor(&z0).unwrap(),
                Var::from_tensor(&a0).unwrap(),
                Var::from_tensor(&b0).unwrap(),
            );
            let lora = with_lora.then(|| (a.as_tensor(), lb.as_tensor()));
            let y = if fused {
                kernels::linear_of_gelu(z.as_tensor(), &w, Some(&b), lora).unwrap()
            } else {
                let g = kernels::gelu(z.as_tensor()).unwrap();
                match lora {
                    Some((a, lb)) => kernels::lora_linear(&g, &w, Some(&b), a, lb).unwrap(),
                    None => kernels::frozen_linear(&g, &w, Some(&b)).unwrap(),
                }
            };
            let grads = (&y * &wt).unwrap().sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| grads.get(v).cloned();
            (y.detach(), get(&z).unwrap(), get(&a), get(&lb))
        };
        let (f, c) = (run(true), run(false));
        assert!(max_diff(&f.0, &c.0) < TOL, "value, lora {with_lora}");
        assert!(max_diff(&f.1, &c.1) < TOL, "dz, lora {with_lora}");
        if with_lora {
            assert!(max_diff(f.2.as_ref().unwrap(), c.2.as_ref().unwrap()) < TOL);
            assert!(max_diff(f.3.as_ref().unwrap(), c.3.as_ref().unwrap()) < TOL);
        }
    }
}
