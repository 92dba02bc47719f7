//! Data: the benchmark types, JSON-lines and emoji loaders, the Dirichlet partition, the metric.
pub mod emoji;
pub mod example;
pub mod jsonl;
pub mod metrics;
pub mod partition;

pub use emoji::{load_emoji, EmojiConfig, EmojiTask};
pub use example::{Benchmark, ClientData, Example, Pool};
pub use jsonl::{load_jsonl, parse_jsonl, write_jsonl, JsonlOptions};
pub use metrics::{multilingual_accuracy, per_language_accuracy};
pub use partition::{partition_train_test, partition_with, LdaPartition};
