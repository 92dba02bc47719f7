//! TensorFlow BERT variable names (google-research/bert, as TF Hub exported them) → the names of
//! Hugging Face `BertModel`, and the tensors a BERT-base of the pinned shape must have.
use std::collections::BTreeMap;

/// bert-base-multilingual-cased as Google released it (its `bert_config.json`).
pub mod arch {
    pub const VOCAB: u64 = 119_547;
    pub const HIDDEN: u64 = 768;
    pub const LAYERS: u64 = 12;
    pub const HEADS: u64 = 12;
    pub const INTERMEDIATE: u64 = 3072;
    pub const MAX_POSITIONS: u64 = 512;
    pub const TYPE_VOCAB: u64 = 2;
}

/// What becomes of one variable of the SavedModel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// Stored under the HF name; `transpose`: a dense kernel, stored [in, out], ours [out, in].
    Keep { hf: String, transpose: bool },
    /// Not part of `BertModel`: the MLM head (`cls/…`), optimizer slots, the step counter.
    Drop,
}

/// Maps one TensorFlow variable name; an unknown name under `bert/` is an error (the checkpoint
/// is not the BERT we expect).
pub fn hf_name(tf: &str) -> Result<Mapped, String> {
    let name = tf.strip_prefix("module/").unwrap_or(tf);
    let slot = ["adam_m", "adam_v", "Adam", "Adam_1", "Momentum"];
    if name
        .rsplit('/')
        .next()
        .is_some_and(|last| slot.contains(&last))
    {
        return Ok(Mapped::Drop);
    }
    let Some(rest) = name.strip_prefix("bert/") else {
        return Ok(Mapped::Drop); // cls/predictions/…, cls/seq_relationship/…, global_step
    };
    let mut parts: Vec<String> = rest
        .split('/')
        .map(|p| match p.strip_prefix("layer_") {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                format!("layer.{n}")
            }
            _ => p.to_string(),
        })
        .collect();
    let last = parts.pop().ok_or_else(|| format!("empty name {tf}"))?;
    let (suffix, transpose) = match last.as_str() {
        "kernel" => ("weight", true),
        "gamma" => ("weight", false),
        "beta" | "bias" => ("bias", false),
        "word_embeddings" | "position_embeddings" | "token_type_embeddings" => {
            parts.push(last.clone());
            ("weight", false)
        }
        _ => return Err(format!("unknown BERT variable {tf}")),
    };
    parts.push(suffix.to_string());
    Ok(Mapped::Keep {
        hf: parts.join("."),
        transpose,
    })
}

/// Every tensor of HF `BertModel` (pooler included) with its shape in our layout.
pub fn expected() -> BTreeMap<String, Vec<u64>> {
    use arch::*;
    let h = HIDDEN;
    let mut m = BTreeMap::new();
    // A weight and its bias (a linear: [out, in] and [out]; a layer norm: [h] and [h]).
    let mut pair = |p: &str, weight: &[u64], bias: u64| {
        m.insert(format!("{p}.weight"), weight.to_vec());
        m.insert(format!("{p}.bias"), vec![bias]);
    };
    pair("embeddings.LayerNorm", &[h], h);
    for i in 0..LAYERS {
        let p = format!("encoder.layer.{i}");
        for q in ["query", "key", "value"] {
            pair(&format!("{p}.attention.self.{q}"), &[h, h], h);
        }
        pair(&format!("{p}.attention.output.dense"), &[h, h], h);
        pair(&format!("{p}.attention.output.LayerNorm"), &[h], h);
        pair(
            &format!("{p}.intermediate.dense"),
            &[INTERMEDIATE, h],
            INTERMEDIATE,
        );
        pair(&format!("{p}.output.dense"), &[h, INTERMEDIATE], h);
        pair(&format!("{p}.output.LayerNorm"), &[h], h);
    }
    pair("pooler.dense", &[h, h], h);
    for (name, shape) in [
        ("word_embeddings", [VOCAB, h]),
        ("position_embeddings", [MAX_POSITIONS, h]),
        ("token_type_embeddings", [TYPE_VOCAB, h]),
    ] {
        m.insert(format!("embeddings.{name}.weight"), shape.to_vec());
    }
    m
}

/// Transposes a row-major (rows, cols) matrix of 4-byte values given as little-endian bytes.
pub fn transpose4(bytes: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    debug_assert_eq!(bytes.len(), rows * cols * 4);
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let from = (r * cols + c) * 4;
            let to = (c * rows + r) * 4;
            out[to..to + 4].copy_from_slice(&bytes[from..from + 4]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(hf: &str, transpose: bool) -> Mapped {
        Mapped::Keep {
            hf: hf.into(),
            transpose,
        }
    }

    #[test]
    fn tf_names_map_to_hf_names() -> Result<(), String> {
        let cases = [
            (
                "module/bert/embeddings/word_embeddings",
                keep("embeddings.word_embeddings.weight", false),
            ),
            (
                "bert/embeddings/token_type_embeddings",
                keep("embeddings.token_type_embeddings.weight", false),
            ),
            (
                "module/bert/embeddings/LayerNorm/gamma",
                keep("embeddings.LayerNorm.weight", false),
            ),
            (
                "module/bert/encoder/layer_0/attention/self/query/kernel",
                keep("encoder.layer.0.attention.self.query.weight", true),
            ),
            (
                "module/bert/encoder/layer_11/attention/self/value/bias",
                keep("encoder.layer.11.attention.self.value.bias", false),
            ),
            (
                "module/bert/encoder/layer_3/attention/output/LayerNorm/beta",
                keep("encoder.layer.3.attention.output.LayerNorm.bias", false),
            ),
            (
                "module/bert/encoder/layer_7/intermediate/dense/kernel",
                keep("encoder.layer.7.intermediate.dense.weight", true),
            ),
            (
                "module/bert/encoder/layer_10/output/LayerNorm/gamma",
                keep("encoder.layer.10.output.LayerNorm.weight", false),
            ),
            (
                "module/bert/pooler/dense/kernel",
                keep("pooler.dense.weight", true),
            ),
            ("module/cls/predictions/output_bias", Mapped::Drop),
            ("cls/predictions/transform/dense/kernel", Mapped::Drop),
            ("global_step", Mapped::Drop),
            (
                "bert/encoder/layer_0/attention/self/query/kernel/adam_m",
                Mapped::Drop,
            ),
        ];
        for (tf, want) in cases {
            assert_eq!(hf_name(tf)?, want, "{tf}");
        }
        assert!(hf_name("module/bert/encoder/layer_0/attention/self/query/weights").is_err());
        Ok(())
    }

    #[test]
    fn expected_names_are_bert_base() {
        let e = expected();
        // 3 embedding tables + their norm, 12 × 16, pooler.
        assert_eq!(e.len(), 5 + 12 * 16 + 2);
        let params: u64 = e.values().map(|s| s.iter().product::<u64>()).sum();
        assert_eq!(params, 177_853_440, "HF's BertModel count for mBERT");
        assert_eq!(
            e["encoder.layer.5.intermediate.dense.weight"],
            vec![3072, 768]
        );
    }

    #[test]
    fn transpose_swaps_axes() {
        let m: Vec<u8> = (0u32..6).flat_map(|v| v.to_le_bytes()).collect(); // [[0,1,2],[3,4,5]]
        let t = transpose4(&m, 2, 3);
        let vals: Vec<u32> = t
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(vals, [0, 3, 1, 4, 2, 5]);
    }
}
