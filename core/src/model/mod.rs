//! BERT-family encoders whose every Linear is an adapted linear, and their loaders.
pub mod config;
pub mod e5_tokenizer;
pub mod e5s1;
pub mod tokenizer;

pub use config::BertConfig;
pub use e5_tokenizer::E5Tokenizer;
pub use e5s1::{load_e5s1, E5s1};
pub use tokenizer::Tokenize;
