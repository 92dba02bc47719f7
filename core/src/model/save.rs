//! Writes a `SeqClassifier` as a Hugging Face `BertForSequenceClassification` checkpoint
//! (`config.json` + `model.safetensors`), so PyTorch tooling (transformers, peft) can load the
//! base model we trained, pooler and classifier included.
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use safetensors::{Dtype, View};

use super::SeqClassifier;
use crate::{Error, Result};

/// Where `BertForSequenceClassification` nests the encoder.
pub const BERT_PREFIX: &str = "bert.";

/// The HF module path of one of our linears inside a `*ForSequenceClassification` model: the head
/// (`classifier`) sits at the model's root, everything else inside the encoder under `prefix`.
pub fn hf_module_path(name: &str, prefix: &str) -> String {
    if name == "classifier" {
        name.to_string()
    } else {
        format!("{prefix}{name}")
    }
}

/// Saves the model's CURRENT base weights to `dir` as a BERT sequence classifier.
///
/// Adapters are ignored (not merged): the checkpoint is the base that a peft adapter (see
/// [`crate::adapter::peft`]) applies to. Call `merge_adapters` first to save a merged model.
/// An XLM-R-style position numbering (first position = pad + 1) is folded into the saved
/// position table, since HF BERT numbers positions from 0: the saved model computes the same.
pub fn save_hf_classifier(model: &SeqClassifier, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let first = model.config.first_position();
    let position =
        model
            .embeddings
            .position
            .narrow(0, first, model.embeddings.position.dim(0)? - first)?;
    let config = hf_config(model, position.dim(0)?)?;
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config).map_err(|e| Error::io(&config_path, e))?;

    let p = BERT_PREFIX;
    let e = &model.embeddings;
    let mut tensors: Vec<(String, Tensor)> = vec![
        (
            format!("{p}embeddings.word_embeddings.weight"),
            e.word.to_f32()?,
        ),
        (
            format!("{p}embeddings.position_embeddings.weight"),
            position,
        ),
        (
            format!("{p}embeddings.token_type_embeddings.weight"),
            e.token_type.clone(),
        ),
        (
            format!("{p}embeddings.LayerNorm.weight"),
            e.norm.weight.clone(),
        ),
        (format!("{p}embeddings.LayerNorm.bias"), e.norm.bias.clone()),
    ];
    for (i, layer) in model.layers.iter().enumerate() {
        for (norm, ln) in [
            ("attention.output.LayerNorm", &layer.attn_norm),
            ("output.LayerNorm", &layer.out_norm),
        ] {
            let name = format!("{p}encoder.layer.{i}.{norm}");
            tensors.push((format!("{name}.weight"), ln.weight.clone()));
            tensors.push((format!("{name}.bias"), ln.bias.clone()));
        }
    }
    for lin in model.linears() {
        let path = hf_module_path(&lin.name, p);
        let (w, b) = lin.base_weights();
        tensors.push((format!("{path}.weight"), w.clone()));
        if let Some(b) = b {
            tensors.push((format!("{path}.bias"), b.clone()));
        }
    }
    write_safetensors(&dir.join("model.safetensors"), tensors)
}

/// Our config plus what transformers needs to build the right class and head size.
fn hf_config(model: &SeqClassifier, max_positions: usize) -> Result<String> {
    let mut config = model.config.clone();
    config.model_type = "bert".into();
    config.max_position_embeddings = max_positions;
    config.position_offset = Some(0);
    let num_labels = model.num_labels();
    config.num_labels = Some(num_labels);
    let mut value =
        serde_json::to_value(&config).map_err(|e| Error::Config(format!("config: {e}")))?;
    let id2label: serde_json::Map<String, serde_json::Value> = (0..num_labels)
        .map(|i| (i.to_string(), format!("LABEL_{i}").into()))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = (0..num_labels)
        .map(|i| (format!("LABEL_{i}"), i.into()))
        .collect();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "architectures".into(),
            serde_json::json!(["BertForSequenceClassification"]),
        );
        obj.insert("id2label".into(), id2label.into());
        obj.insert("label2id".into(), label2id.into());
    }
    serde_json::to_string_pretty(&value).map_err(|e| Error::Config(format!("config: {e}")))
}

/// A tensor copied to host memory as little-endian f32, ready for safetensors. Copying first
/// keeps device or conversion errors typed (candle's own `View` impl unwraps them).
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl F32View {
    fn new(t: &Tensor) -> Result<Self> {
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self {
            shape: t.dims().to_vec(),
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }
}

impl View for &F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes named tensors as an f32 safetensors file with the `{"format": "pt"}` metadata that
/// transformers and peft write (and older transformers versions require).
pub(crate) fn write_safetensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), F32View::new(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views.iter().map(|(n, v)| (*n, v)), Some(meta))
        .map_err(|e| Error::format("safetensors", path, e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_sits_at_the_root_and_the_rest_under_the_prefix() {
        assert_eq!(hf_module_path("classifier", "bert."), "classifier");
        assert_eq!(hf_module_path("pooler.dense", "bert."), "bert.pooler.dense");
        assert_eq!(hf_module_path("pooler.dense", ""), "pooler.dense");
    }
}
