//! Broken or mismatched HF checkpoint files give typed errors, never panics: a truncated or
//! corrupt safetensors file, a corrupt tokenizer.json, a config that does not match the weights.
use std::path::Path;

use candle_core::Device;
use fedp2eft_core::model::{load_hf, HfTokenizer};
use fedp2eft_core::Error;

/// A copy of MiniLM's files in a temp dir, with `edit` applied.
fn broken_copy(edit: impl FnOnce(&Path)) -> anyhow::Result<tempfile::TempDir> {
    let src = fedp2eft_core::home::minilm_dir();
    assert!(src.exists(), "MiniLM missing: run `fedp2eft fetch`");
    let dir = tempfile::tempdir()?;
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f))?;
    }
    edit(dir.path());
    Ok(dir)
}

fn edit_config(dir: &Path, from: &str, to: &str) {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).expect("config");
    assert!(text.contains(from));
    std::fs::write(&p, text.replace(from, to)).expect("write");
}

#[test]
fn truncated_and_corrupt_safetensors_are_format_errors() -> anyhow::Result<()> {
    for cut in [0usize, 7, 100, 1_000_000] {
        let dir = broken_copy(|d| {
            let p = d.join("model.safetensors");
            let bytes = std::fs::read(&p).expect("read");
            std::fs::write(&p, &bytes[..cut.min(bytes.len())]).expect("write");
        })?;
        let e = load_hf(dir.path(), 3, 0, &Device::Cpu);
        assert!(
            matches!(e, Err(Error::Format { .. })),
            "cut at {cut}: {:?}",
            e.err()
        );
    }
    let dir = broken_copy(|d| {
        let p = d.join("model.safetensors");
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[8..40].copy_from_slice(&[b'#'; 32]); // clobber the JSON header
        std::fs::write(&p, bytes).expect("write");
    })?;
    assert!(matches!(
        load_hf(dir.path(), 3, 0, &Device::Cpu),
        Err(Error::Format { .. })
    ));
    let dir = broken_copy(|d| std::fs::remove_file(d.join("model.safetensors")).expect("rm"))?;
    assert!(matches!(
        load_hf(dir.path(), 3, 0, &Device::Cpu),
        Err(Error::Format { .. })
    ));
    Ok(())
}

#[test]
fn corrupt_tokenizer_is_a_format_error() -> anyhow::Result<()> {
    let dir = broken_copy(|d| {
        let p = d.join("tokenizer.json");
        let bytes = std::fs::read(&p).expect("read");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    })?;
    let e = HfTokenizer::from_file(&dir.path().join("tokenizer.json"));
    assert!(matches!(e, Err(Error::Format { .. })));
    Ok(())
}

#[test]
fn config_that_does_not_match_the_weights_is_a_mismatch() -> anyhow::Result<()> {
    for (from, to) in [
        ("\"hidden_size\": 384", "\"hidden_size\": 768"),
        ("\"intermediate_size\": 1536", "\"intermediate_size\": 3072"),
        ("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 12"),
        ("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 4"),
        ("\"vocab_size\": 30522", "\"vocab_size\": 250037"),
    ] {
        let dir = broken_copy(|d| edit_config(d, from, to))?;
        let e = load_hf(dir.path(), 3, 0, &Device::Cpu);
        assert!(matches!(e, Err(Error::Mismatch(_))), "{to}: {:?}", e.err());
    }
    let dir =
        broken_copy(|d| edit_config(d, "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"swish\""))?;
    assert!(matches!(
        load_hf(dir.path(), 3, 0, &Device::Cpu),
        Err(Error::Config(_))
    ));
    let dir = broken_copy(|d| edit_config(d, "\"hidden_size\": 384", "\"hidden_size\": \"big\""))?;
    assert!(matches!(
        load_hf(dir.path(), 3, 0, &Device::Cpu),
        Err(Error::Format { .. })
    ));
    Ok(())
}
