//! Parity with Hugging Face `transformers` on all-MiniLM-L6-v2 (HF-format loader).
//! Expected values: `core/tests/golden/minilm.json`, written by
//! `scripts/reference/minilm_golden.py` (torch / transformers versions recorded in the file;
//! token ids from the pure-Python `BertTokenizer`, independent of the `tokenizers` crate).
mod goldens;
use candle_core::{Device, Tensor};
use fedp2eft_core::adapter::{AdapterInit, LoraConfig};
use fedp2eft_core::model::{load_hf, HfTokenizer, Tokenize};
use goldens::{golden, u32s};
use serde_json::Value;

fn model_dir() -> std::path::PathBuf {
    let dir = fedp2eft_core::home::minilm_dir();
    assert!(
        dir.join("model.safetensors").exists(),
        "MiniLM not found in {}: run `fedp2eft fetch` first",
        dir.display()
    );
    dir
}

fn f32s(v: &Value) -> Vec<f32> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            x => out.push(x.as_f64().expect("number") as f32),
        }
    }
    walk(v, &mut out);
    out
}

#[test]
fn token_ids_equal_the_python_reference_tokenizer() -> anyhow::Result<()> {
    let tok = HfTokenizer::from_file(&model_dir().join("tokenizer.json"))?;
    let g = golden("minilm.json")?;
    let cases = g["tokens"].as_array().expect("tokens");
    assert!(cases.len() >= 8);
    for c in cases {
        let text = c["text"].as_str().expect("text");
        assert_eq!(tok.encode(text, 512)?, u32s(&c["ids"]), "text {text:?}");
    }
    Ok(())
}

#[test]
fn hidden_states_and_pooler_equal_transformers() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let model = load_hf(&model_dir(), 3, 42, &dev)?;
    assert_eq!(
        model.num_adapted(),
        38,
        "L = 6 layers × 6 + pooler + classifier"
    );
    let g = golden("minilm.json")?;
    let b = &g["batch"];
    let rows: Vec<Vec<u32>> = b["input_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(u32s)
        .collect();
    let (n, t) = (rows.len(), rows[0].len());
    let ids = Tensor::from_vec(rows.concat(), (n, t), &dev)?;
    let mask_rows: Vec<Vec<u32>> = b["attention_mask"]
        .as_array()
        .expect("mask")
        .iter()
        .map(u32s)
        .collect();
    let mask = Tensor::from_vec(mask_rows.concat(), (n, t), &dev)?;
    let out = model.forward_all(&ids, &mask, None)?;
    let want_h = Tensor::from_vec(f32s(&b["last_hidden_state"]), out.last_hidden.shape(), &dev)?;
    // Padding rows of the hidden states are compared too: HF computes them the same way.
    let dh = (out.last_hidden - want_h)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    let want_p = Tensor::from_vec(f32s(&b["pooler_output"]), out.pooled.shape(), &dev)?;
    let dp = (out.pooled - want_p)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("max |Δ| hidden {dh:.2e}, pooler {dp:.2e}");
    assert!(dh < 1e-4, "hidden states differ by {dh}");
    assert!(dp < 1e-4, "pooler output differs by {dp}");

    // `forward` runs the last layer for the first token only; with adapters it must still give
    // forward_all's logits.
    let mut adapted = model.clone();
    let init = AdapterInit::new(
        &adapted,
        LoraConfig {
            r: 4,
            lora_alpha: 8.0,
            seed: 3,
        },
    )?;
    let lambda = vec![0.5f32; 4 * adapted.num_adapted()];
    init.install_full(&mut adapted, &lambda)?;
    for l in adapted.linears_mut() {
        let ad = l.adapter.as_mut().expect("adapter");
        let b = Tensor::randn(0f32, 0.1, ad.b.dims(), &dev)?;
        ad.b.set(&b)?;
    }
    for m in [&model, &adapted] {
        let all = m.forward_all(&ids, &mask, None)?.logits;
        let fast = m.forward(&ids, &mask)?;
        let d = (all - fast)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "forward differs from forward_all by {d}");
    }
    Ok(())
}
