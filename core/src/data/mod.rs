//! Data: the benchmark types; JSON-lines, emoji, MasakhaNEWS and SIB-200 loaders; the paper's
//! pool protocol and Dirichlet partition; labels mapped onto a head; the metric.
pub mod emoji;
pub mod example;
pub mod jsonl;
pub mod labels;
pub mod masakhanews;
pub mod metrics;
pub mod partition;
pub mod protocol;
pub mod sib200;
pub mod tsv;

pub use emoji::{load_emoji, EmojiConfig, EmojiTask};
pub use example::{Benchmark, ClientData, Example, Pool};
pub use jsonl::{load_jsonl, parse_jsonl, write_jsonl, JsonlOptions};
pub use masakhanews::{load_masakhanews, MasakhaConfig, MasakhaNews, NewsField};
pub use metrics::{multilingual_accuracy, per_language_accuracy};
pub use partition::{partition_train_test, partition_with, LdaPartition};
pub use protocol::{
    split_into_pools, split_rows_into_pools, Item, LanguageSet, PoolProtocol, RawLanguage, Row,
};
pub use sib200::{load_sib200, SibConfig};
pub use tsv::{read_tsv, Table};
