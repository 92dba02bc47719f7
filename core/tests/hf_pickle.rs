//! The HF loader's second weights format: a `pytorch_model.bin` written by torch from MiniLM's
//! safetensors loads to the same model (logits equal to the safetensors load).
use candle_core::{Device, Tensor};
use fedp2eft_core::model::load_hf;

mod common;
use common::reference_python;

#[test]
fn pytorch_model_bin_loads_like_safetensors() -> anyhow::Result<()> {
    let src = fedp2eft_core::home::minilm_dir();
    anyhow::ensure!(src.exists(), "MiniLM missing: run `fedp2eft fetch`");
    let dir = tempfile::tempdir()?;
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f))?;
    }
    let bin = dir.path().join("pytorch_model.bin");
    let script = "import sys, torch\nfrom safetensors.torch import load_file\n\
                  torch.save(load_file(sys.argv[1]), sys.argv[2])\n";
    let st = src.join("model.safetensors");
    let out = std::process::Command::new(reference_python()?)
        .args(["-c", script])
        .arg(&st)
        .arg(&bin)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Device::Cpu;
    let a = load_hf(&src, 4, 7, &dev)?;
    let b = load_hf(dir.path(), 4, 7, &dev)?;
    let ids = Tensor::new(&[[101u32, 7592, 2088, 999, 102]], &dev)?;
    let mask = ids.ones_like()?;
    let d = (a.forward(&ids, &mask)? - b.forward(&ids, &mask)?)?
        .abs()?
        .max_all()?;
    assert_eq!(d.to_scalar::<f32>()?, 0.0);
    Ok(())
}
