//! Assembles a `SeqClassifier` from named tensors (Hugging Face names), checking every shape
//! against the config; a missing pooler or classifier is initialised as HF does (N(0, 0.02)).
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::bert::{EncoderLayer, SeqClassifier};
use super::layers::{Embeddings, LayerNorm};
use super::linear::AdaptedLinear;
use super::word_table::WordTable;
use super::BertConfig;
use crate::{Error, Result};

/// Prefixes under which HF checkpoints nest the encoder (`BertForSequenceClassification` etc.).
const PREFIXES: [&str; 4] = ["", "bert.", "roberta.", "model."];

struct Weights<'a> {
    map: &'a HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.get_stored(name, shape)?.to_dtype(DType::F32)?)
    }

    /// `name` with the checkpoint's prefix: how errors name a weight.
    fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The key `name` is stored under: with the checkpoint's prefix, else bare.
    fn key(&self, name: &str) -> Option<String> {
        let full = self.full(name);
        if self.map.contains_key(&full) {
            Some(full)
        } else {
            self.map.contains_key(name).then(|| name.to_string())
        }
    }

    /// `key`, or the error naming the prefixed weight that is missing.
    fn present(&self, name: &str) -> Result<String> {
        self.key(name)
            .ok_or_else(|| Error::Mismatch(format!("weight `{}` is missing", self.full(name))))
    }

    /// The tensor in the dtype it was stored in.
    fn get_stored(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let key = self.present(name)?;
        let t = &self.map[&key];
        check_shape(&self.full(name), t.dims(), shape)?;
        Ok(t.clone())
    }

    /// The word table under `name`: a grid table as stored, a dense one compacted.
    fn word_table(&self, name: &str, shape: &[usize]) -> Result<WordTable> {
        let key = self.present(name)?;
        let table = WordTable::from_map(self.map, &key)?;
        check_shape(&self.full(name), table.dims(), shape)?;
        match table {
            WordTable::Dense(t) => Ok(WordTable::Dense(compact_word_table(t)?)),
            grid => Ok(grid),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.key(name).is_some()
    }
}

/// The shape error `build` gives for weight `full`.
fn check_shape(full: &str, dims: &[usize], shape: &[usize]) -> Result<()> {
    if dims != shape {
        return Err(Error::Mismatch(format!(
            "weight `{full}` has shape {dims:?}, the config implies {shape:?}"
        )));
    }
    Ok(())
}

fn normal_init(shape: (usize, usize), rng: &mut ChaCha8Rng, dev: &Device) -> Result<Tensor> {
    let dist = Normal::new(0.0f32, 0.02).map_err(|e| Error::Config(e.to_string()))?;
    let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| dist.sample(rng)).collect();
    Ok(Tensor::from_vec(v, shape, dev)?)
}

/// Builds the classifier. `num_labels` overrides the config; `seed` drives the init of a head
/// the checkpoint lacks.
pub fn build_classifier(
    config: &BertConfig,
    map: &HashMap<String, Tensor>,
    num_labels: usize,
    seed: u64,
    dev: &Device,
) -> Result<SeqClassifier> {
    if config.hidden_act != "gelu" {
        return Err(Error::Config(format!(
            "hidden_act `{}` is not supported (only gelu)",
            config.hidden_act
        )));
    }
    if config.hidden_size % config.num_attention_heads != 0 {
        return Err(Error::Config("hidden_size not divisible by heads".into()));
    }
    let prefix = PREFIXES
        .iter()
        .copied()
        .find(|p| map.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
        .ok_or_else(|| Error::Mismatch("no `embeddings.word_embeddings.weight` found".into()))?;
    let w = Weights { map, prefix };
    let (h, ff) = (config.hidden_size, config.intermediate_size);
    let ln = |name: &str| -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: w.get(&format!("{name}.weight"), &[h])?,
            bias: w.get(&format!("{name}.bias"), &[h])?,
            eps: config.layer_norm_eps,
        })
    };
    let mut index = 0;
    let mut lin = |name: String, out: usize, inp: usize| -> Result<AdaptedLinear> {
        let weight = w.get(&format!("{name}.weight"), &[out, inp])?;
        let bias = w.get(&format!("{name}.bias"), &[out])?;
        index += 1;
        AdaptedLinear::new(name, index - 1, weight, Some(bias))
    };
    let max_pos = config.max_position_embeddings;
    if config.first_position() >= max_pos {
        return Err(Error::Config(
            "position offset beyond the position table".into(),
        ));
    }
    // As stored: an f16 or grid table stays so (converting it to f32 and back would double
    // the load's peak memory).
    let word = w.word_table("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
    let embeddings = Embeddings {
        word,
        position: w.get("embeddings.position_embeddings.weight", &[max_pos, h])?,
        token_type: w.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?,
        norm: ln("embeddings.LayerNorm")?,
        first_position: config.first_position(),
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        layers.push(EncoderLayer {
            query: lin(format!("{p}.attention.self.query"), h, h)?,
            key: lin(format!("{p}.attention.self.key"), h, h)?,
            value: lin(format!("{p}.attention.self.value"), h, h)?,
            attn_out: lin(format!("{p}.attention.output.dense"), h, h)?,
            attn_norm: ln(&format!("{p}.attention.output.LayerNorm"))?,
            intermediate: lin(format!("{p}.intermediate.dense"), ff, h)?,
            output: lin(format!("{p}.output.dense"), h, ff)?,
            out_norm: ln(&format!("{p}.output.LayerNorm"))?,
            num_heads: config.num_attention_heads,
        });
    }
    if w.has(&format!(
        "encoder.layer.{}.attention.self.query.weight",
        layers.len()
    )) {
        return Err(Error::Mismatch(format!(
            "checkpoint has more than num_hidden_layers = {} layers",
            layers.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let base = layers.len() * 6;
    let pooler = if w.has("pooler.dense.weight") {
        let mut p = lin("pooler.dense".into(), h, h)?;
        p.index = base;
        p
    } else {
        let weight = normal_init((h, h), &mut rng, dev)?;
        let bias = Tensor::zeros(h, DType::F32, dev)?;
        AdaptedLinear::new("pooler.dense".into(), base, weight, Some(bias))?
    };
    // A checkpoint's own head must fit; only a checkpoint without one gets a fresh head.
    let head_fits = match map.get("classifier.weight") {
        Some(t) if t.dims() == [num_labels, h] => true,
        Some(t) => {
            return Err(Error::Mismatch(format!(
                "checkpoint head `classifier.weight` is {:?}, expected [{num_labels}, {h}]",
                t.dims()
            )))
        }
        None => false,
    };
    let classifier = if head_fits {
        let weight = map["classifier.weight"].to_dtype(DType::F32)?;
        let bias = match map.get("classifier.bias") {
            Some(b) => b.to_dtype(DType::F32)?,
            None => Tensor::zeros(num_labels, DType::F32, dev)?,
        };
        AdaptedLinear::new("classifier".into(), base + 1, weight, Some(bias))?
    } else {
        let weight = normal_init((num_labels, h), &mut rng, dev)?;
        let bias = Tensor::zeros(num_labels, DType::F32, dev)?;
        AdaptedLinear::new("classifier".into(), base + 1, weight, Some(bias))?
    };
    let mut config = config.clone();
    config.num_labels = Some(num_labels);
    Ok(SeqClassifier {
        name: config.model_type.clone(),
        config,
        embeddings,
        layers,
        pooler,
        classifier,
    })
}

/// Word tables of at least this many values (128 MB in f32) are kept compact: multilingual
/// vocabularies (e5-small: 250k × 384 = 384 MB in f32) dominate the model's memory. A table on
/// a block grid (e5-small's Q4_0 values) keeps a byte per value, exactly (word_table.rs); any
/// other goes to f16, and a frozen lookup table loses nothing that matters at f16's 11-bit
/// precision (rows are widened to f32 as they are gathered). Small tables (MiniLM: 30k × 384)
/// stay f32.
pub const F16_WORD_TABLE_MIN: usize = 32 << 20;

fn compact_word_table(word: Tensor) -> Result<Tensor> {
    let dtype = if word.elem_count() >= F16_WORD_TABLE_MIN {
        DType::F16
    } else {
        DType::F32
    };
    Ok(word.to_dtype(dtype)?)
}
