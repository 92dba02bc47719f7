//! Text → token ids, for both loaders (HF `tokenizer.json` and the E5S1 built-in unigram).

/// One tokenized text: ids including the special tokens ([CLS]/<s> … [SEP]/</s>).
pub trait Tokenize: Send + Sync {
    /// Encode one text, truncated to at most `max_len` ids (specials included).
    fn encode(&self, text: &str, max_len: usize) -> crate::Result<Vec<u32>>;
    /// Id used to pad batches.
    fn pad_id(&self) -> u32;
}
