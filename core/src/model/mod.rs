//! BERT-family encoders whose every Linear is an adapted linear, and their loaders.
pub mod bert;
pub mod build;
pub mod config;
pub mod e5_tokenizer;
pub mod e5s1;
pub mod hf;
pub mod layers;
pub mod linear;
pub mod save;
pub mod spec;
mod st_reader;
pub mod tokenizer;
pub mod unigram;
pub mod word_table;

pub use bert::{EncoderOutput, SeqClassifier};
pub use config::BertConfig;
pub use e5_tokenizer::E5Tokenizer;
pub use e5s1::{load_e5s1, load_e5s1_tokenizer, E5s1};
pub use hf::{load_hf, HfTokenizer};
pub use linear::AdaptedLinear;
pub use save::save_hf_classifier;
pub use spec::{load_base, load_pretrained, save_base, LoadedModel, Manifest, ModelSpec};
pub use tokenizer::Tokenize;
