//! Features, BT-LoRA stage 1 and PSG stage 2 on MiniLM with a real emoji client.
use candle_core::{DType, Device};
use fedp2eft_core::adapter::{AdapterInit, LoraConfig, PriorConfig};
use fedp2eft_core::data::{load_emoji, EmojiConfig};
use fedp2eft_core::features::{extract, SD_EPS};
use fedp2eft_core::method::{learn_lambda, LearnedLambda};
use fedp2eft_core::model::{load_hf, HfTokenizer, SeqClassifier, Tokenize};
use fedp2eft_core::psg::{Psg, PsgConfig, PsgMeta, FEATURE_LAYOUT};
use fedp2eft_core::train::{encode_all, make_batch, Dataset, Encoded, TrainConfig};
use fedp2eft_core::Control;

fn setup() -> anyhow::Result<(SeqClassifier, Vec<Encoded>, u32)> {
    let dir = fedp2eft_core::home::minilm_dir();
    assert!(dir.exists(), "MiniLM missing: run `fedp2eft fetch`");
    let cfg = EmojiConfig {
        locales: vec!["en".into()],
        ..Default::default()
    };
    let bench = load_emoji(&fedp2eft_core::home::emojibase_dir(), &cfg)?;
    let client = bench.client("seen-en-1").expect("client");
    let model = load_hf(&dir, bench.num_labels, 42, &Device::Cpu)?;
    let tok = HfTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let enc = encode_all(&client.train, &tok, 32, bench.num_labels)?;
    Ok((model, enc, tok.pad_id()))
}

/// Adapters per layer of the stage-1 tests.
const R: usize = 4;

/// λ at the authors' init, 1e-4, for every rank.
fn floor(model: &SeqClassifier) -> Vec<f32> {
    vec![1e-4; R * model.num_adapted()]
}

/// BT-LoRA stage 1 on `set` from `floor` (r = 4, α 8, seed 42, the default priors) under `cfg`.
fn stage_one(
    model: &SeqClassifier,
    set: &Dataset,
    cfg: &TrainConfig,
) -> anyhow::Result<LearnedLambda> {
    let lora = LoraConfig {
        r: R,
        lora_alpha: 8.0,
        seed: 42,
    };
    let init = AdapterInit::new(model, lora)?;
    let priors = PriorConfig::default();
    Ok(learn_lambda(
        model,
        set,
        &init,
        &floor(model),
        cfg,
        &priors,
        &Control::default(),
    )?)
}

#[test]
fn classifier_feature_equals_statistics_of_the_pooled_outputs() -> anyhow::Result<()> {
    let (model, enc, pad) = setup()?;
    let set = Dataset {
        examples: &enc,
        pad_id: pad,
    };
    let x = extract(&model, &set, &Control::default())?;
    assert_eq!(x.len(), 2 * model.num_adapted());
    // Independent computation: the classifier's input is the pooled output; gather it over the
    // same batches of 4 and take the unbiased statistics of all elements in one pass.
    let mut all = Vec::new();
    let idx: Vec<usize> = (0..enc.len()).collect();
    for c in idx.chunks(4) {
        let b = make_batch(&enc, c, pad, &Device::Cpu)?;
        let out = model.forward_all(&b.ids, &b.mask, None)?;
        all.extend(
            out.pooled
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?,
        );
    }
    let n = all.len() as f64;
    let mean = all.iter().sum::<f64>() / n;
    let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let l = model.num_adapted() - 1;
    assert!(
        (x[2 * l] as f64 - mean).abs() < 1e-6,
        "{} vs {mean}",
        x[2 * l]
    );
    assert!((x[2 * l + 1] as f64 - (var + SD_EPS).sqrt()).abs() < 1e-6);
    // Features ignore adapters (the authors set λ = 0 while extracting).
    let mut adapted = model.clone();
    let init = AdapterInit::new(
        &model,
        LoraConfig {
            r: 4,
            lora_alpha: 8.0,
            seed: 1,
        },
    )?;
    init.install_full(&mut adapted, &vec![1.0; 4 * model.num_adapted()])?;
    assert_eq!(extract(&adapted, &set, &Control::default())?, x);
    Ok(())
}

#[test]
fn stage_one_moves_lambda_and_stage_two_fits_the_psg_towards_it() -> anyhow::Result<()> {
    let (model, enc, pad) = setup()?;
    let set = Dataset {
        examples: &enc,
        pad_id: pad,
    };
    let (r, lam0) = (R, floor(&model));
    let cfg = TrainConfig {
        epochs: 1,
        max_len: 32,
        ..Default::default()
    };
    let learned = stage_one(&model, &set, &cfg)?;
    assert_eq!(learned.raw.len(), lam0.len());
    let moved = learned
        .raw
        .iter()
        .zip(&lam0)
        .filter(|(a, b)| (*a - *b).abs() > 1e-6)
        .count();
    assert!(moved > lam0.len() / 2, "only {moved} λ moved");
    assert!(learned.raw.iter().all(|v| v.is_finite()));
    // Once B leaves its init the Laplace term (∝ |B − B0| / λ²) pulls λ up from the floor; if
    // B0 aliased B (a detached view of the variable) every λ would fall in lockstep instead.
    assert!(
        learned.raw.iter().any(|&v| v > 1e-3),
        "no λ rose: the Laplace term is inert"
    );
    let mut distinct: Vec<i64> = learned
        .raw
        .iter()
        .map(|v| (v * 1e6).round() as i64)
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > model.num_adapted(),
        "λ barely differ: {}",
        distinct.len()
    );
    assert!(learned
        .clamped(&PriorConfig::default())
        .iter()
        .all(|&v| v >= 1e-4));
    // Stage 2: the L1 loss towards the learned λ falls over the 10 Adam steps.
    let meta = PsgMeta {
        base_model: model.model_id(),
        num_layers: model.num_adapted(),
        r_max: r,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    let psg = Psg::new(meta, PsgConfig::default(), 42)?;
    let x = extract(&model, &set, &Control::default())?;
    let b2 = psg.b2.as_tensor().to_vec1::<f32>()?;
    let losses = psg.regress(&x, &learned.raw)?;
    assert_eq!(losses.len(), 10);
    // Targets below the clamp floor cannot lower the clamped output's loss (the authors' STE
    // design), but the PSG still moves towards every target.
    assert!(losses[9] <= losses[0], "{losses:?}");
    assert_ne!(psg.b2.as_tensor().to_vec1::<f32>()?, b2);
    // Towards targets above the floor, the L1 loss falls at every step.
    let fresh = Psg::new(psg.meta.clone(), PsgConfig::default(), 42)?;
    let target: Vec<f32> = (0..lam0.len())
        .map(|i| 0.01 + (i % 10) as f32 * 0.01)
        .collect();
    let losses = fresh.regress(&x, &target)?;
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
    Ok(())
}

#[test]
fn a_client_round_returns_an_updated_copy_of_the_psg() -> anyhow::Result<()> {
    use fedp2eft_core::federated::{client_round, RoundConfig};
    let dir = fedp2eft_core::home::minilm_dir();
    let cfg = EmojiConfig {
        locales: vec!["en".into()],
        ..Default::default()
    };
    let bench = load_emoji(&fedp2eft_core::home::emojibase_dir(), &cfg)?;
    let client = bench.client("seen-en-2").expect("client");
    let model = load_hf(&dir, bench.num_labels, 42, &Device::Cpu)?;
    let tok = HfTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let r = 4;
    let meta = PsgMeta {
        base_model: model.model_id(),
        num_layers: model.num_adapted(),
        r_max: r,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    let global = Psg::new(meta, PsgConfig::default(), 42)?;
    let before = global.b2.as_tensor().to_vec1::<f32>()?;
    let round = RoundConfig {
        lora: LoraConfig {
            r,
            lora_alpha: 8.0,
            seed: 42,
        },
        train: TrainConfig {
            epochs: 1,
            max_len: 32,
            ..Default::default()
        },
        ..Default::default()
    };
    let up = client_round(&model, &tok, client, &global, &round, &Control::default())?;
    assert_eq!(up.num_samples, client.train.len());
    assert_eq!(up.stage2_loss.len(), 10);
    assert!(up.stage1.steps > 0);
    // The update moved; the global PSG it started from did not (no shared variables).
    assert_ne!(up.psg.b2.as_tensor().to_vec1::<f32>()?, before);
    assert_eq!(global.b2.as_tensor().to_vec1::<f32>()?, before);
    // A PSG for another L or r_max is refused before any work.
    let mut bad = round.clone();
    bad.lora.r = 8;
    assert!(client_round(&model, &tok, client, &global, &bad, &Control::default()).is_err());
    Ok(())
}

/// Micro-batches accumulate the batch's gradient: BT-LoRA stage 1 (CE + priors, batch 16, 2
/// epochs) a micro-batch of 5 at a time learns the λ of whole batches and reports their losses,
/// up to float summation order (parts summed unweighted would report ≈ 4× the loss; Adam's
/// scale invariance would hide it in λ).
#[test]
fn micro_batches_give_the_whole_batch_step() -> anyhow::Result<()> {
    let (model, enc, pad) = setup()?;
    let set = Dataset {
        examples: &enc,
        pad_id: pad,
    };
    let lam0 = floor(&model);
    let learn = |micro_batch: Option<usize>| {
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 16,
            micro_batch,
            max_len: 32,
            ..Default::default()
        };
        stage_one(&model, &set, &cfg)
    };
    let whole = learn(None)?;
    let micro = learn(Some(5))?;
    assert!(enc.len() > 16, "{} examples: no batch to split", enc.len());
    assert_eq!(micro.report.steps, whole.report.steps);
    assert_eq!(micro.report.examples_seen, whole.report.examples_seen);
    for (a, b) in micro.report.epoch_loss.iter().zip(&whole.report.epoch_loss) {
        assert!((a - b).abs() < 1e-4 * b.abs(), "epoch loss {a} vs {b}");
    }
    let moved: f32 = whole
        .raw
        .iter()
        .zip(&lam0)
        .map(|(a, b)| (a - b).abs())
        .sum();
    let diff: f32 = micro
        .raw
        .iter()
        .zip(&whole.raw)
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(moved > 0.0);
    assert!(diff < 1e-3 * moved, "λ differ by {diff} (moved {moved})");
    Ok(())
}
