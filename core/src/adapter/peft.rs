//! Export of the model's adapters as a Hugging Face peft LoRA adapter (`adapter_config.json` +
//! `adapter_model.safetensors`) that `PeftModel.from_pretrained` loads onto the HF base model
//! written by [`crate::model::save::save_hf_classifier`].
//!
//! peft has no λ, so it is folded into B (B' = B·diag(λ)); the function is unchanged, and ranks
//! at λ = 0 (AdaLoRA's masked singular values) are left out, so the ranks written are the final
//! ones (AdaLoRA's SVD form P·Λ·Q is written as this equivalent LoRA). peft's
//! per-layer scaling is alpha_i / r_i while ours stays α/r_max after pruning, so every layer gets
//! alpha_i = scaling_i · r_i (`lora_alpha` for the common rank, `alpha_pattern` for the others).
//!
//! peft 0.21 matching, which the names below rely on:
//! - `target_modules` as a list matches a module whose name equals an entry or ends in
//!   `.<entry>`; we list full paths from the model's root (`bert.encoder.layer.0...`,
//!   `classifier`), so exactly the adapted modules match.
//! - `rank_pattern` / `alpha_pattern` keys are regexes tried in order with
//!   `re.match(r"(.*\.)?(KEY)$", name)`, first match wins, unmatched names fall back to `r` /
//!   `lora_alpha`. A full path matches only its own module ('.' is a regex wildcard, but no other
//!   module path has the same length and letters), so plain names are used, as peft's docs do.
//! - Weights are stored without the adapter name (`<..>.lora_A.weight`); peft inserts
//!   `default` when loading. No `task_type`: SEQ_CLS would wrap the classifier in
//!   `modules_to_save` instead of adapting it (the authors also set none).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::model::save::{hf_module_path, write_safetensors, BERT_PREFIX};
use crate::model::SeqClassifier;
use crate::{Error, Result};

/// What [`export_peft`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftExport {
    /// `adapter_config.json` and `adapter_model.safetensors`.
    pub files: Vec<PathBuf>,
    /// Number of layers that carry an adapter.
    pub num_layers: usize,
    /// Sum of their ranks.
    pub total_rank: usize,
}

/// One adapted layer as peft sees it.
#[derive(Debug, Clone, PartialEq)]
struct LayerSpec {
    /// Module path from the model's root, e.g. `bert.encoder.layer.0.attention.self.query`.
    module: String,
    rank: usize,
    /// scaling · rank, so that peft's alpha / rank equals our scaling.
    alpha: f64,
}

/// Exports for `BertForSequenceClassification` (encoder under `bert.`).
pub fn export_peft(
    model: &SeqClassifier,
    dir: &Path,
    base_model_name_or_path: &str,
) -> Result<PeftExport> {
    export_peft_with_prefix(model, dir, base_model_name_or_path, BERT_PREFIX)
}

/// Exports with the encoder nested under `prefix` in the HF model (`bert.`, `roberta.`, or ""
/// for a bare encoder); a missing trailing dot is added.
pub fn export_peft_with_prefix(
    model: &SeqClassifier,
    dir: &Path,
    base_model_name_or_path: &str,
    prefix: &str,
) -> Result<PeftExport> {
    let prefix = if prefix.is_empty() || prefix.ends_with('.') {
        prefix.to_string()
    } else {
        format!("{prefix}.")
    };
    let mut specs = Vec::new();
    let mut tensors = Vec::new();
    for lin in model.linears() {
        let Some(ad) = lin.adapter.as_ref() else {
            continue;
        };
        // Ranks at λ = 0 (AdaLoRA's masked singular values, a pruned λ) contribute nothing:
        // left out, so the exported ranks are the final ones. A layer left with none is absent
        // (peft rejects r = 0).
        let lambda = ad.lambda.tensor().to_vec1::<f32>()?;
        let live: Vec<u32> = (0..lambda.len() as u32)
            .filter(|&i| lambda[i as usize] != 0.0)
            .collect();
        if live.is_empty() {
            continue;
        }
        let rank = live.len();
        let idx = candle_core::Tensor::new(live.as_slice(), ad.a.as_tensor().device())?;
        let a = ad.a.as_tensor().index_select(&idx, 0)?; // (r', in)
        let b = ad.b.as_tensor().broadcast_mul(ad.lambda.tensor())?; // (out, r): B·diag(λ)
        let b = b.index_select(&idx, 1)?;
        let module = hf_module_path(&lin.name, &prefix);
        let key = format!("base_model.model.{module}");
        tensors.push((format!("{key}.lora_A.weight"), a));
        tensors.push((format!("{key}.lora_B.weight"), b));
        specs.push(LayerSpec {
            module,
            rank,
            alpha: ad.scaling * rank as f64,
        });
    }
    if specs.is_empty() {
        return Err(Error::Config(
            "cannot export a peft adapter: no layer carries an adapter".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config_path = dir.join("adapter_config.json");
    let config = serde_json::to_string_pretty(&lora_config(&specs, base_model_name_or_path))
        .map_err(|e| Error::Config(format!("adapter config: {e}")))?;
    std::fs::write(&config_path, config).map_err(|e| Error::io(&config_path, e))?;
    let weights_path = dir.join("adapter_model.safetensors");
    write_safetensors(&weights_path, tensors)?;
    Ok(PeftExport {
        files: vec![config_path, weights_path],
        num_layers: specs.len(),
        total_rank: specs.iter().map(|s| s.rank).sum(),
    })
}

/// The peft `LoraConfig` for these layers: `r` is the most common rank (ties: the larger),
/// every other rank and alpha goes into the patterns.
fn lora_config(specs: &[LayerSpec], base_model_name_or_path: &str) -> Value {
    let mut counts = BTreeMap::new();
    for s in specs {
        *counts.entry(s.rank).or_insert(0usize) += 1;
    }
    let r = counts
        .iter()
        .max_by_key(|&(_, &n)| n)
        .map_or(0, |(&rank, _)| rank);
    let lora_alpha = specs.iter().find(|s| s.rank == r).map_or(0.0, |s| s.alpha);
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
    let rank_pattern: BTreeMap<&str, usize> = specs
        .iter()
        .filter(|s| s.rank != r)
        .map(|s| (s.module.as_str(), s.rank))
        .collect();
    let alpha_pattern: BTreeMap<&str, Value> = specs
        .iter()
        .filter(|s| !same(s.alpha, lora_alpha))
        .map(|s| (s.module.as_str(), number(s.alpha)))
        .collect();
    let targets: Vec<&str> = specs.iter().map(|s| s.module.as_str()).collect();
    json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": base_model_name_or_path,
        "r": r,
        "lora_alpha": number(lora_alpha),
        "target_modules": targets,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "lora_dropout": 0.0,
        "bias": "none",
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "fan_in_fan_out": false,
        "modules_to_save": null,
        "inference_mode": true,
    })
}

/// Integral alphas as JSON integers (peft types `lora_alpha` as int); others as floats.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(module: &str, rank: usize, scaling: f64) -> LayerSpec {
        LayerSpec {
            module: module.into(),
            rank,
            alpha: scaling * rank as f64,
        }
    }

    #[test]
    fn common_rank_is_r_and_the_others_are_patterns_with_scaling_kept() {
        let specs = [
            spec("bert.encoder.layer.0.attention.self.query", 4, 2.0),
            spec("bert.encoder.layer.0.attention.self.key", 1, 2.0),
            spec("bert.pooler.dense", 4, 2.0),
            spec("classifier", 3, 0.5),
        ];
        let c = lora_config(&specs, "base");
        assert_eq!(c["r"], 4);
        assert_eq!(c["lora_alpha"], 8);
        assert_eq!(
            c["rank_pattern"],
            json!({"bert.encoder.layer.0.attention.self.key": 1, "classifier": 3})
        );
        assert_eq!(
            c["alpha_pattern"],
            json!({"bert.encoder.layer.0.attention.self.key": 2, "classifier": 1.5})
        );
        assert_eq!(c["target_modules"].as_array().map(Vec::len), Some(4));
        assert_eq!(c["task_type"], Value::Null);
    }
}
