//! The base model's FedAvg (full fine-tuning) on MiniLM with two real emoji clients: the global
//! weights equal the sample-weighted mean of the clients' own fine-tunes, computed here by hand
//! from independent runs of the same local training; round checkpoints reload exactly.
use candle_core::{DType, Device, Tensor};
use fedp2eft_core::data::{load_emoji, ClientData, EmojiConfig};
use fedp2eft_core::federated::base::{fedavg_round, load_linears, save_linears, FedBaseConfig};
use fedp2eft_core::model::{load_hf, HfTokenizer, SeqClassifier};
use fedp2eft_core::train::{encode_all, Dataset, TrainConfig};
use fedp2eft_core::train_base::{train_base, BaseScope};
use fedp2eft_core::Control;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?)
}

#[test]
fn fedavg_of_full_fine_tunes_is_the_weighted_mean() -> anyhow::Result<()> {
    let dir = fedp2eft_core::home::minilm_dir();
    assert!(dir.exists(), "MiniLM missing: run `fedp2eft fetch`");
    let cfg = EmojiConfig {
        locales: vec!["en".into()],
        clients_per_language: 2,
        ..Default::default()
    };
    let bench = load_emoji(&fedp2eft_core::home::emojibase_dir(), &cfg)?;
    let mut clients: Vec<ClientData> = bench.clients.iter().take(2).cloned().collect();
    clients[0].train.truncate(12);
    clients[1].train.truncate(20);
    let refs: Vec<&ClientData> = clients.iter().collect();
    let tok = HfTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let base = load_hf(&dir, bench.num_labels, 42, &Device::Cpu)?;
    let fc = FedBaseConfig {
        rounds: 1,
        clients_per_round: 2,
        local: TrainConfig {
            epochs: 1,
            batch_size: 8,
            max_len: 16,
            lr_base: 1e-3,
            ..Default::default()
        },
        seed: 1,
    };
    let ctl = Control::default();
    let mut global = base.clone();
    let log = fedavg_round(&mut global, &tok, &refs, 0, &fc, &ctl)?;
    assert_eq!(log.samples, 32);
    assert_eq!(log.clients.len(), 2);
    assert!(log.loss.is_finite());

    // By hand: each client's fine-tune of the round's starting weights, then 12/32 and 20/32.
    let mut locals: Vec<SeqClassifier> = Vec::new();
    for c in &clients {
        let enc = encode_all(&c.train, &tok, 16, bench.num_labels)?;
        let set = Dataset {
            examples: &enc,
            pad_id: fedp2eft_core::model::Tokenize::pad_id(&tok),
        };
        let mut m = base.clone();
        train_base(&mut m, &set, BaseScope::Full, &fc.local, &ctl)?;
        locals.push(m);
    }
    let mut worst = 0f32;
    let mut moved = 0f32;
    for (k, g) in global.linears().iter().enumerate() {
        let (a, b) = (
            locals[0].linears()[k].weight(),
            locals[1].linears()[k].weight(),
        );
        let want = ((a * (12.0 / 32.0))? + (b * (20.0 / 32.0))?)?;
        worst = worst.max(max_abs_diff(g.weight(), &want)?);
        moved = moved.max(max_abs_diff(g.weight(), base.linears()[k].weight())?);
    }
    println!("max |global − hand FedAvg| = {worst:e}, max |Δ| from the start = {moved:e}");
    assert!(worst < 1e-6, "{worst}");
    assert!(moved > 1e-4, "the round changed nothing ({moved})");

    // A round's checkpoint reloads exactly; another head shape is refused.
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("round-0.safetensors");
    save_linears(&global, &path)?;
    let mut again = base.clone();
    load_linears(&mut again, &path)?;
    for (g, r) in global.linears().iter().zip(again.linears()) {
        assert_eq!(max_abs_diff(g.weight(), r.weight())?, 0.0, "{}", g.name);
    }
    let mut other = load_hf(&dir, 3, 42, &Device::Cpu)?;
    let e = load_linears(&mut other, &path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("classifier") && e.contains("shape"), "{e}");
    Ok(())
}
