//! `tokenizer.json` for a cased BERT WordPiece vocabulary (what Hugging Face ships for
//! bert-base-multilingual-cased): BERT normalizer without lowercasing or accent stripping, BERT
//! pre-tokenizer, WordPiece (`[UNK]`, `##`, 100 characters a word), `[CLS] $A [SEP]`.
use anyhow::{anyhow, bail, Result};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// Special tokens and the ids Google's vocab.txt gives them.
pub const SPECIALS: [(&str, u32); 5] = [
    ("[PAD]", 0),
    ("[UNK]", 100),
    ("[CLS]", 101),
    ("[SEP]", 102),
    ("[MASK]", 103),
];

/// The tokenizer of `vocab` (one token a line, id = line number).
pub fn build(vocab: &str, expected_size: usize) -> Result<Tokenizer> {
    let tokens: Vec<&str> = vocab.lines().collect();
    if tokens.len() != expected_size {
        bail!(
            "vocab.txt has {} tokens, expected {expected_size}",
            tokens.len()
        );
    }
    let mut map = std::collections::HashMap::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        if map.insert(t.to_string(), id as u32).is_some() {
            bail!("vocab.txt lists {t:?} twice");
        }
    }
    for (t, id) in SPECIALS {
        if map.get(t) != Some(&id) {
            bail!("vocab.txt does not have {t} at id {id}");
        }
    }
    // The crate's own reader (it trims line ends; ours are clean) gives its map type.
    let vocab = WordPiece::read_bytes(vocab.as_bytes()).map_err(|e| anyhow!("vocab.txt: {e}"))?;
    if vocab.len() != map.len() {
        bail!("vocab.txt has tokens that differ only in trailing whitespace");
    }
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| anyhow!("WordPiece: {e}"))?;
    let post = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .map_err(|e| anyhow!("template: {e}"))?
        .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
        .map_err(|e| anyhow!("template: {e}"))?
        .special_tokens(vec![("[CLS]", 101), ("[SEP]", 102)])
        .build()
        .map_err(|e| anyhow!("template: {e}"))?;
    let mut tok = Tokenizer::new(model);
    // Cased: no lowercasing, and accent stripping follows lowercasing (None = off).
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, false)))
        .map_err(|e| anyhow!("normalizer: {e}"))?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(post));
    tok.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    tok.add_special_tokens(SPECIALS.map(|(t, _)| AddedToken::from(t, true)))
        .map_err(|e| anyhow!("special tokens: {e}"))?;
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_vocab() -> String {
        let mut v: Vec<String> = (0..104).map(|i| format!("[unused{i}]")).collect();
        for (t, id) in SPECIALS {
            v[id as usize] = t.into();
        }
        v.extend(["Hello", "world", "##s", "!", "é", "Ça", "中", "文"].map(String::from));
        v.join("\n") + "\n"
    }

    #[test]
    fn cased_wordpiece_with_cls_and_sep() -> Result<()> {
        let tok = build(&tiny_vocab(), 112)?;
        let ids = |s: &str| -> Result<Vec<u32>> {
            Ok(tok
                .encode(s, true)
                .map_err(|e| anyhow!("{e}"))?
                .get_ids()
                .to_vec())
        };
        // Cased: "hello" is not "Hello"; "worlds" is world + ##s; CJK characters split.
        assert_eq!(ids("Hello worlds!")?, [101, 104, 105, 106, 107, 102]);
        assert_eq!(ids("hello")?, [101, 100, 102]);
        assert_eq!(ids("Ça é")?, [101, 109, 108, 102], "accents kept");
        assert_eq!(ids("中文")?, [101, 110, 111, 102]);
        let pair = tok
            .encode(("Hello", "world"), true)
            .map_err(|e| anyhow!("{e}"))?;
        assert_eq!(pair.get_ids(), [101, 104, 102, 105, 102]);
        assert_eq!(pair.get_type_ids(), [0, 0, 0, 1, 1]);
        assert!(build(&tiny_vocab(), 113).is_err());
        Ok(())
    }
}
