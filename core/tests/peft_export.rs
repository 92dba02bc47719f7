//! PEFT export round trip: MiniLM with BT-LoRA adapters of heterogeneous ranks (some layers
//! without one, pruned rank subsets, λ ≠ 1) is saved as an HF base model + peft adapter, and
//! `tests/python/check_peft_export.py` (torch 2.15.0, transformers 5.24.0, peft 0.21.2, from
//! scripts/reference/setup-venv.sh) reloads both and reproduces the Rust logits.
use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use fedp2eft_core::adapter::bt_lora::init_a;
use fedp2eft_core::adapter::{export_peft, BtLora, Lambda};
use fedp2eft_core::model::save::{hf_module_path, BERT_PREFIX};

mod common;
use common::{reference_python, repo_root};
use fedp2eft_core::model::{load_hf, save_hf_classifier, HfTokenizer, SeqClassifier, Tokenize};
use fedp2eft_core::train::batch::{make_batch, Encoded};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const R_MAX: usize = 8;
const ALPHA: f64 = 16.0;
const SENTENCES: [&str; 4] = [
    "The movie was wonderful and the actors were great.",
    "I did not like this at all.",
    "Привет, как дела?",
    "A much longer sentence, so that the other rows of this batch are padded on the right.",
];

/// Rank per linear in module order: mostly 4, some 0 (no adapter), the others 1..8.
fn rank_of(i: usize, n: usize) -> usize {
    match n - 1 - i {
        0 => 2, // classifier
        1 => 3, // pooler
        _ => [4, 0, 4, 1, 8, 4, 6, 0, 4, 2][i % 10],
    }
}

fn uniform(shape: (usize, usize), lo: f32, hi: f32, rng: &mut impl Rng) -> anyhow::Result<Tensor> {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.random_range(lo..hi))
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Installs r_max-rank adapters with random A, B, λ, then keeps a scattered subset of ranks, as
/// budget pruning does (scaling stays α/r_max).
fn install_adapters(model: &mut SeqClassifier) -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = model.num_adapted();
    for (i, lin) in model.linears_mut().into_iter().enumerate() {
        let rank = rank_of(i, n);
        if rank == 0 {
            continue;
        }
        let a = init_a(R_MAX, lin.in_features(), &mut rng, &Device::Cpu)?;
        let lambda = uniform((1, R_MAX), 0.5, 1.5, &mut rng)?.squeeze(0)?;
        let full = BtLora::new(
            &a,
            lin.out_features(),
            Lambda::Fixed(lambda.clone()),
            ALPHA / R_MAX as f64,
        )?;
        full.b
            .set(&uniform((lin.out_features(), R_MAX), -0.3, 0.3, &mut rng)?)?;
        let keep: Vec<usize> = (0..rank).map(|j| (3 * j + i) % R_MAX).collect();
        let idx = Tensor::from_vec(keep.iter().map(|&k| k as u32).collect(), rank, &Device::Cpu)?;
        let kept = full.select(&keep, Lambda::Fixed(lambda.index_select(&idx, 0)?))?;
        lin.adapter = Some(kept);
    }
    Ok(())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

#[test]
fn peft_export_reloads_in_python_and_reproduces_the_logits() -> anyhow::Result<()> {
    let dir = fedp2eft_core::home::minilm_dir();
    if !dir.join("config.json").exists() {
        bail!(
            "MiniLM not found in {}: run `fedp2eft fetch`",
            dir.display()
        );
    }
    let python = reference_python()?;
    let dev = Device::Cpu;
    let mut model = load_hf(&dir, 3, 42, &dev)?;
    let tok = HfTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let data = SENTENCES
        .iter()
        .map(|s| {
            Ok(Encoded {
                ids: tok.encode(s, 128)?,
                label: 0,
            })
        })
        .collect::<fedp2eft_core::Result<Vec<_>>>()?;
    let batch = make_batch(&data, &[0, 1, 2, 3], tok.pad_id(), &dev)?;
    let base_logits = model.forward(&batch.ids, &batch.mask)?;

    install_adapters(&mut model)?;
    let logits = model.forward(&batch.ids, &batch.mask)?;
    let effect = max_abs_diff(&logits, &base_logits)?;
    assert!(
        effect > 1e-2,
        "adapters barely change the logits ({effect}): test is vacuous"
    );
    let mut merged = model.clone();
    merged.merge_adapters()?;
    let d_merged = max_abs_diff(&merged.forward(&batch.ids, &batch.mask)?, &logits)?;
    assert!(
        d_merged < 1e-4,
        "merged vs adapter logits differ by {d_merged}"
    );

    let tmp = tempfile::tempdir()?;
    let mut bare = model.clone();
    bare.clear_adapters();
    assert!(export_peft(&bare, &tmp.path().join("none"), "x").is_err());
    // An existing local path: peft otherwise tries to look the base up on the hub.
    let base_dir = tmp.path().join("base");
    save_hf_classifier(&model, &base_dir)?;
    // Our own loader reads the saved base back to the same function.
    let reloaded = load_hf(&base_dir, 3, 0, &dev)?.forward(&batch.ids, &batch.mask)?;
    let d_reload = max_abs_diff(&reloaded, &base_logits)?;
    assert!(d_reload < 1e-6, "reloaded base differs by {d_reload}");
    let export = export_peft(
        &model,
        &tmp.path().join("adapter"),
        &base_dir.to_string_lossy(),
    )?;
    let (mut ranks, mut scalings) = (BTreeMap::new(), BTreeMap::new());
    for lin in model.linears() {
        if let Some(ad) = &lin.adapter {
            let module = hf_module_path(&lin.name, BERT_PREFIX);
            ranks.insert(module.clone(), ad.rank());
            scalings.insert(module, ad.scaling);
        }
    }
    assert_eq!(export.num_layers, ranks.len());
    assert_eq!(export.total_rank, ranks.values().sum::<usize>());
    let expected = serde_json::json!({
        "input_ids": batch.ids.to_vec2::<u32>()?,
        "attention_mask": batch.mask.to_vec2::<u32>()?,
        "base_logits": base_logits.to_vec2::<f32>()?,
        "logits": logits.to_vec2::<f32>()?,
        "ranks": ranks,
        "scalings": scalings,
    });
    std::fs::write(
        tmp.path().join("expected.json"),
        serde_json::to_string(&expected)?,
    )?;

    let script = repo_root().join("tests/python/check_peft_export.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(tmp.path())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let kept = tmp.keep();
        bail!(
            "{} failed ({}); files kept in {}",
            script.display(),
            out.status,
            kept.display()
        );
    }
    Ok(())
}
