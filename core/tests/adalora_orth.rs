//! AdaLoRA's orthogonal regulariser against peft's loop in PyTorch on the same matrices: the
//! value and the gradients of every A and B (`tests/golden/adalora_orth.json`,
//! scripts/reference/adalora_orth_golden.py).
mod goldens;

use candle_core::{Device, Tensor, Var};
use fedp2eft_core::method::adalora::orthogonal_penalty;
use goldens::golden;
use serde_json::Value;

fn matrix(v: &Value) -> anyhow::Result<Tensor> {
    let rows: Vec<Vec<f32>> = v
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect();
    let (n, m) = (rows.len(), rows[0].len());
    Ok(Tensor::from_vec(rows.concat(), (n, m), &Device::Cpu)?)
}

fn max_abs(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

#[test]
fn penalty_and_gradients_match_peft() -> anyhow::Result<()> {
    let g = golden("adalora_orth.json")?;
    let layers = g["layers"].as_array().expect("layers");
    let vars: Vec<(Var, Var)> = layers
        .iter()
        .map(|l| -> anyhow::Result<_> {
            Ok((
                Var::from_tensor(&matrix(&l["a"])?)?,
                Var::from_tensor(&matrix(&l["b"])?)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let pairs: Vec<(&Tensor, &Tensor)> = vars
        .iter()
        .map(|(a, b)| (a.as_tensor(), b.as_tensor()))
        .collect();
    let loss = orthogonal_penalty(&pairs)?;
    let want = g["loss"].as_f64().expect("loss") as f32;
    let got = loss.to_scalar::<f32>()?;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    let grads = loss.backward()?;
    for ((a, b), l) in vars.iter().zip(layers) {
        for (v, key) in [(a, "grad_a"), (b, "grad_b")] {
            let grad = grads.get(v.as_tensor()).expect("gradient");
            let d = max_abs(grad, &matrix(&l[key])?)?;
            assert!(d < 1e-5, "{key}: max |Δ| {d}");
        }
    }
    assert!(orthogonal_penalty(&[]).is_err());
    Ok(())
}
