//! BERT-family encoders whose every Linear is an adapted linear, and their loaders.
pub mod config;
pub mod tokenizer;

pub use config::BertConfig;
pub use tokenizer::Tokenize;
