//! SentencePiece-unigram Viterbi over a sorted piece table: the `tokenizers` crate's
//! `Unigram::encode_optimized` step for step (start positions in order, the pieces matching
//! there shortest first, a candidate replaces a node only with a strictly higher score, an
//! unknown node of one character where no single-character piece matches, unknown score =
//! min piece score − 10), without its trie of one hash map per node: XLM-R's 250k pieces take
//! ≈ 6 MB here against ≈ 180 MB there (issue 14). Unknown characters stay one node each, as
//! e5.c emits them (the crate fuses runs of them).

/// Pieces that can be matched as text, sorted by their bytes, with every piece's score.
pub struct Unigram {
    /// The matchable pieces' bytes, back to back.
    bytes: Vec<u8>,
    /// (start in `bytes`, length, id), sorted by the piece's bytes.
    sorted: Vec<(u32, u32, u32)>,
    /// By id.
    scores: Vec<f64>,
    unk: u32,
    unk_score: f64,
}

/// Node of the best path ending at a byte position.
#[derive(Clone, Copy)]
struct Best {
    score: f64,
    /// Byte position the last piece starts at; `usize::MAX` while unreached.
    start: usize,
    id: u32,
}

const K_UNK_PENALTY: f64 = 10.0;

impl Unigram {
    /// `pieces[id] = (piece, score)`; only ids with `matchable[id]` are matched as text, and
    /// every score counts towards the minimum (as the crate's `Unigram::from`).
    pub fn new(pieces: &[(String, f32)], matchable: &[bool], unk: u32) -> Self {
        let mut bytes = Vec::new();
        let mut sorted = Vec::new();
        for (id, ((p, _), &m)) in pieces.iter().zip(matchable).enumerate() {
            if m {
                sorted.push((bytes.len() as u32, p.len() as u32, id as u32));
                bytes.extend_from_slice(p.as_bytes());
            }
        }
        let key = |&(s, l, _): &(u32, u32, u32)| &bytes[s as usize..(s + l) as usize];
        sorted.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        let scores: Vec<f64> = pieces.iter().map(|&(_, s)| f64::from(s)).collect();
        let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
        Self {
            bytes,
            sorted,
            scores,
            unk,
            unk_score: min - K_UNK_PENALTY,
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        let (s, l, _) = self.sorted[i];
        &self.bytes[s as usize..(s + l) as usize]
    }

    /// Calls `f(length, id)` for every piece that is a prefix of `rest`, shortest first: a
    /// walk down the sorted table, narrowing the range of pieces that share `rest[..d]`.
    fn prefixes(&self, rest: &[u8], mut f: impl FnMut(usize, u32)) {
        let (mut lo, mut hi) = (0, self.sorted.len());
        for d in 0..=rest.len() {
            if lo >= hi {
                return;
            }
            // In a range sharing d bytes, the piece of exactly those d bytes sorts first.
            if self.key(lo).len() == d {
                if d > 0 {
                    f(d, self.sorted[lo].2);
                }
                lo += 1;
            }
            let Some(&b) = rest.get(d) else { return };
            let range = lo..hi;
            let first = range.start
                + self.sorted[range.clone()]
                    .partition_point(|&(s, _, _)| self.bytes[s as usize + d] < b);
            let end = range.start
                + self.sorted[range].partition_point(|&(s, _, _)| self.bytes[s as usize + d] <= b);
            (lo, hi) = (first, end);
        }
    }

    /// The ids of the best segmentation of `s` (an unknown character is one `unk`).
    pub fn encode(&self, s: &str) -> Vec<u32> {
        let n = s.len();
        let unreached = Best {
            score: 0.0,
            start: usize::MAX,
            id: 0,
        };
        let mut best = vec![unreached; n + 1];
        let mut i = 0;
        while i < n {
            let here = best[i].score;
            let mblen = s[i..].chars().next().map_or(1, char::len_utf8);
            let mut single = false;
            let offer = |best: &mut [Best], end: usize, score: f64, id: u32| {
                let t = &mut best[end];
                if t.start == usize::MAX || score > t.score {
                    *t = Best {
                        score,
                        start: i,
                        id,
                    };
                }
            };
            self.prefixes(&s.as_bytes()[i..], |len, id| {
                offer(&mut best, i + len, self.scores[id as usize] + here, id);
                single |= len == mblen;
            });
            if !single {
                offer(&mut best, i + mblen, self.unk_score + here, self.unk);
            }
            i += mblen;
        }
        let mut ids = Vec::new();
        let mut end = n;
        while end > 0 {
            let node = best[end];
            ids.push(node.id);
            end = node.start;
        }
        ids.reverse();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tokenizers::Model;

    /// The crate's Unigram on the same pieces, its fused unknown runs split back per char.
    fn reference(pieces: &[(String, f32)], matchable: &[bool], unk: u32, s: &str) -> Vec<u32> {
        let vocab = pieces
            .iter()
            .zip(matchable)
            .enumerate()
            .map(|(id, ((p, sc), &m))| {
                let key = if m {
                    p.clone()
                } else {
                    format!(" unmatchable {id}")
                };
                (key, f64::from(*sc))
            })
            .collect();
        let model = tokenizers::models::unigram::Unigram::from(vocab, Some(unk as usize), false)
            .expect("reference model");
        let mut ids = Vec::new();
        for t in model.tokenize(s).expect("reference tokenize") {
            if t.id == unk {
                ids.extend(std::iter::repeat_n(unk, t.value.chars().count()));
            } else {
                ids.push(t.id);
            }
        }
        ids
    }

    #[test]
    fn random_vocabularies_segment_as_the_tokenizers_crate() {
        let alphabet: Vec<char> = "ab▁çé中文🙂".chars().collect();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for case in 0..40 {
            let mut pieces = vec![("<unk>".to_string(), 0.0f32)];
            let mut matchable = vec![false];
            for _ in 0..rng.random_range(3..40) {
                let len = rng.random_range(1..5);
                let p: String = (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect();
                matchable.push(!pieces.iter().any(|(q, _)| *q == p));
                // Scores on a coarse grid, so that equal path scores (ties) occur.
                pieces.push((p, -(rng.random_range(1..8) as f32) * 0.5));
            }
            let ours = Unigram::new(&pieces, &matchable, 0);
            for _ in 0..50 {
                let len = rng.random_range(0..14);
                let s: String = (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect();
                assert_eq!(
                    ours.encode(&s),
                    reference(&pieces, &matchable, 0, &s),
                    "case {case}, {s:?}, pieces {pieces:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_characters_are_one_node_each() {
        let pieces: Vec<(String, f32)> = [("<unk>", 0.0), ("a", -1.0), ("ab", -1.5)]
            .iter()
            .map(|&(p, s)| (p.to_string(), s))
            .collect();
        let u = Unigram::new(&pieces, &[false, true, true], 0);
        assert_eq!(u.encode("axyab"), vec![1, 0, 0, 2]);
        assert_eq!(u.encode(""), Vec::<u32>::new());
        assert_eq!(
            u.encode("<unk>"),
            vec![0; 5],
            "the unk piece never matches as text"
        );
    }
}
