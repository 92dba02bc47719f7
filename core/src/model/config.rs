//! Encoder configuration: the fields of a Hugging Face BERT / XLM-R `config.json`.
use serde::{Deserialize, Serialize};

/// Mirrors HF `config.json` field names so a checkpoint's config deserialises unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// "bert" or "xlm-roberta"; decides how position ids are numbered.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Only "gelu" (erf) is used by the checkpoints we load; others are rejected at load.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    /// Number of classes of the sequence-classification head (HF derives it from `id2label`).
    #[serde(default)]
    pub num_labels: Option<usize>,
    /// Index of the first real position in the position table. HF XLM-R numbers positions from
    /// pad_token_id + 1 (= 2); BERT from 0; the E5S1 file stores the table already shifted (0).
    #[serde(default)]
    pub position_offset: Option<usize>,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// First position index used for real tokens.
    pub fn first_position(&self) -> usize {
        match self.position_offset {
            Some(o) => o,
            None if self.model_type.starts_with("xlm") => self.pad_token_id + 1,
            None => 0,
        }
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
