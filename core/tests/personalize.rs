//! `personalize` end to end on MiniLM and a real emoji-benchmark client (English), plus the
//! typed errors of bad input: budgets, labels, empty data, NaN loss, cancellation, PSG files.
use candle_core::{Device, Tensor};
use fedp2eft_core::adapter::LoraConfig;
use fedp2eft_core::data::{load_emoji, ClientData, EmojiConfig};
use fedp2eft_core::method::{Fedp2eft, Lora};
use fedp2eft_core::model::{load_hf, HfTokenizer, SeqClassifier};
use fedp2eft_core::personalize::{personalize, PersonalizeConfig};
use fedp2eft_core::psg::{Psg, PsgConfig, PsgMeta, FEATURE_LAYOUT};
use fedp2eft_core::train::{encode_all, evaluate, Dataset};
use fedp2eft_core::{CancelToken, Control, Error};

struct Fixture {
    model: SeqClassifier,
    tok: HfTokenizer,
    client: ClientData,
}

fn fixture() -> anyhow::Result<Fixture> {
    let dir = fedp2eft_core::home::minilm_dir();
    assert!(dir.exists(), "MiniLM missing: run `fedp2eft fetch`");
    let cfg = EmojiConfig {
        locales: vec!["en".into()],
        ..Default::default()
    };
    let bench = load_emoji(&fedp2eft_core::home::emojibase_dir(), &cfg)?;
    let client = bench.client("seen-en-0").expect("client").clone();
    let model = load_hf(&dir, bench.num_labels, 42, &Device::Cpu)?;
    let tok = HfTokenizer::from_file(&dir.join("tokenizer.json"))?;
    Ok(Fixture { model, tok, client })
}

fn small_cfg(budget: usize) -> PersonalizeConfig {
    let mut cfg = PersonalizeConfig::new(budget);
    cfg.lora = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        seed: 42,
    };
    cfg.train.epochs = 1;
    cfg.train.max_len = 32;
    cfg
}

/// A deterministic λ with a visible structure: later layers get larger scales.
fn ramp_lambda(l: usize, r: usize) -> Vec<f32> {
    (0..l * r)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 + (i / r) as f32 * 1e-2)
        .collect()
}

#[test]
fn personalize_prunes_to_budget_fine_tunes_and_merges() -> anyhow::Result<()> {
    let f = fixture()?;
    let l = f.model.num_adapted();
    let lam = ramp_lambda(l, 8);
    let cfg = small_cfg(2);
    let events = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    let ev = events.clone();
    let ctl = Control::new(move |_| *ev.lock().expect("lock") += 1);
    let out = personalize(
        &f.model,
        &f.tok,
        &f.client,
        &Fedp2eft::with_lambda(&lam),
        &cfg,
        &ctl,
    )?;
    let r = &out.report;
    assert_eq!(r.total_rank, 2 * l, "exactly r·L ranks are kept");
    assert_eq!(r.ranks.iter().map(|x| x.rank).sum::<usize>(), 2 * l);
    assert!(
        r.ranks.iter().any(|x| x.rank == 0),
        "a ramp λ leaves early layers empty"
    );
    assert_eq!(
        r.active_layers,
        r.ranks.iter().filter(|x| x.rank > 0).count()
    );
    assert_eq!(r.accuracy_before.total, f.client.test.len());
    assert!(r.finetune.steps > 0 && *events.lock().expect("lock") > r.finetune.steps);
    // The merged model predicts exactly what the adapted one does.
    let enc = encode_all(&f.client.test, &f.tok, 32, f.model.num_labels())?;
    let set = Dataset {
        examples: &enc,
        pad_id: 0,
    };
    let a = evaluate(&out.adapted, &set, 64, &Control::default())?;
    assert_eq!(a, r.accuracy_after);
    // Layers without ranks carry no adapter; the base model is untouched.
    for (lin, lr) in out.adapted.linears().iter().zip(&r.ranks) {
        assert_eq!(lin.adapter.as_ref().map_or(0, |a| a.rank()), lr.rank);
    }
    assert!(f.model.linears().iter().all(|l| l.adapter.is_none()));
    Ok(())
}

#[test]
fn bad_budgets_labels_and_empty_data_are_typed_errors() -> anyhow::Result<()> {
    let f = fixture()?;
    let lam = ramp_lambda(f.model.num_adapted(), 8);
    let ctl = Control::default();
    for b in [0, 9] {
        let e = personalize(
            &f.model,
            &f.tok,
            &f.client,
            &Fedp2eft::with_lambda(&lam),
            &small_cfg(b),
            &ctl,
        );
        assert!(matches!(e, Err(Error::Budget { budget, r_max: 8 }) if budget == b));
    }
    let mut bad = f.client.clone();
    bad.train[0].label = 99;
    let e = personalize(
        &f.model,
        &f.tok,
        &bad,
        &Fedp2eft::with_lambda(&lam),
        &small_cfg(2),
        &ctl,
    );
    assert!(matches!(e, Err(Error::Label { label: 99, .. })));
    let mut empty = f.client.clone();
    empty.train.clear();
    let e = personalize(
        &f.model,
        &f.tok,
        &empty,
        &Fedp2eft::with_lambda(&lam),
        &small_cfg(2),
        &ctl,
    );
    assert!(matches!(e, Err(Error::EmptyData(_))));
    let e = personalize(
        &f.model,
        &f.tok,
        &f.client,
        &Fedp2eft::with_lambda(&lam[1..]),
        &small_cfg(2),
        &ctl,
    );
    assert!(matches!(e, Err(Error::Mismatch(_))));
    Ok(())
}

#[test]
fn nan_loss_stops_training_naming_the_step() -> anyhow::Result<()> {
    let mut f = fixture()?;
    let bias = &f.model.classifier.bias.clone().expect("bias");
    f.model.classifier.bias = Some(Tensor::full(f32::NAN, bias.dims(), &Device::Cpu)?);
    let lam = ramp_lambda(f.model.num_adapted(), 8);
    let e = personalize(
        &f.model,
        &f.tok,
        &f.client,
        &Fedp2eft::with_lambda(&lam),
        &small_cfg(2),
        &Control::default(),
    );
    match e {
        Err(Error::NonFiniteLoss { step, phase, .. }) => {
            assert_eq!(step, 0);
            assert_eq!(phase, "fine-tune");
        }
        other => panic!("expected NonFiniteLoss, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn cancellation_stops_a_run() -> anyhow::Result<()> {
    let f = fixture()?;
    let lam = ramp_lambda(f.model.num_adapted(), 8);
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    // Cancel from inside the first training progress event.
    let ctl = Control::new(move |p| {
        if p.phase == "fine-tune" {
            c2.cancel()
        }
    })
    .with_cancel(cancel);
    let e = personalize(
        &f.model,
        &f.tok,
        &f.client,
        &Fedp2eft::with_lambda(&lam),
        &small_cfg(2),
        &ctl,
    );
    assert!(matches!(e, Err(Error::Cancelled)));
    Ok(())
}

#[test]
fn psg_round_trips_and_refuses_another_model() -> anyhow::Result<()> {
    let f = fixture()?;
    let meta = PsgMeta {
        base_model: f.model.model_id(),
        num_layers: f.model.num_adapted(),
        r_max: 8,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    let psg = Psg::new(meta, PsgConfig::default(), 42)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("psg.safetensors");
    psg.save(&path)?;
    let back = Psg::load(&path)?;
    let x: Vec<f32> = (0..2 * f.model.num_adapted())
        .map(|i| i as f32 * 0.01)
        .collect();
    assert_eq!(psg.predict(&x)?, back.predict(&x)?);
    // Fresh PSG: λ̂ ≈ 1e-4 everywhere (tiny init), as in the authors' round one.
    assert!(psg.predict(&x)?.iter().all(|&v| (v - 1e-4).abs() < 1e-5));
    // Personalize with it: PSG path runs features → PSG → prune.
    let out = personalize(
        &f.model,
        &f.tok,
        &f.client,
        &Fedp2eft::new(&back),
        &small_cfg(1),
        &Control::default(),
    )?;
    assert_eq!(out.report.total_rank, f.model.num_adapted());
    // Another model (other head size) is refused.
    let other = load_hf(&fedp2eft_core::home::minilm_dir(), 3, 42, &Device::Cpu)?;
    let e = personalize(
        &other,
        &f.tok,
        &f.client,
        &Fedp2eft::new(&back),
        &small_cfg(1),
        &Control::default(),
    );
    assert!(matches!(e, Err(Error::Mismatch(_))));
    // A truncated file is a typed format error.
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..bytes.len() / 2])?;
    assert!(matches!(Psg::load(&path), Err(Error::Format { .. })));
    Ok(())
}

#[test]
fn plain_lora_baseline_has_rank_r_everywhere_and_unit_lambda() -> anyhow::Result<()> {
    let f = fixture()?;
    let out = personalize(
        &f.model,
        &f.tok,
        &f.client,
        &Lora,
        &small_cfg(2),
        &Control::default(),
    )?;
    assert!(out.report.ranks.iter().all(|l| l.rank == 2));
    for lin in out.adapted.linears() {
        let a = lin.adapter.as_ref().expect("every layer adapted");
        assert_eq!(a.ranks, vec![0, 1]);
        assert_eq!(a.lambda.tensor().to_vec1::<f32>()?, vec![1.0, 1.0]);
        assert!((a.scaling - 2.0).abs() < 1e-12, "α/r_max = 16/8");
    }
    Ok(())
}

#[test]
fn pool_evaluation_pools_per_language_and_averages() -> anyhow::Result<()> {
    use fedp2eft_core::data::Pool;
    use fedp2eft_core::evaluation::{evaluate_pool, pool_clients};
    let f = fixture()?;
    let cfg = EmojiConfig {
        locales: vec!["en".into()],
        ..Default::default()
    };
    let bench = load_emoji(&fedp2eft_core::home::emojibase_dir(), &cfg)?;
    let clients = pool_clients(&bench, Pool::Unseen, Some(2));
    assert_eq!(clients.len(), 2);
    assert!(clients.iter().all(|c| c.pool == Pool::Unseen));
    let res = evaluate_pool(
        &f.model,
        &f.tok,
        &clients,
        Pool::Unseen,
        &Lora,
        &small_cfg(2),
        &Control::default(),
    )?;
    let (correct, total) = res.per_language["en"];
    assert_eq!(total, clients.iter().map(|c| c.test.len()).sum::<usize>());
    // One language: the mean over languages is that language's pooled accuracy.
    assert!((res.accuracy - 100.0 * correct as f64 / total as f64).abs() < 1e-9);
    assert_eq!(
        (res.clients, res.budget, res.method.as_str()),
        (2, 2, "LoRA")
    );
    Ok(())
}

/// Each method's structure, straight from `Method::setup`: the structure-only arm keeps the
/// ranks its scores choose with λ = 1; BT-LoRA keeps clamped λ but ranks by the raw values (most
/// raw λ below the clamp floor would otherwise tie); LoRA keeps ranks 0..r everywhere.
#[test]
fn methods_build_their_rank_structures() -> anyhow::Result<()> {
    use fedp2eft_core::adapter::PriorConfig;
    use fedp2eft_core::method::{BtLora, Client, Fedp2eft, Method};
    use fedp2eft_core::prune::{select_top, select_top_by};
    let f = fixture()?;
    let (l, r_max, budget) = (f.model.num_adapted(), 8, 2);
    let enc = encode_all(&f.client.train, &f.tok, 32, f.model.num_labels())?;
    let train = Dataset {
        examples: &enc,
        pad_id: 0,
    };
    let lora = small_cfg(budget).lora;
    let ctl = Control::default();
    let client = Client {
        base: &f.model,
        train: &train,
        budget,
        lora: &lora,
        steps: 1,
        ctl: &ctl,
    };
    let scores = ramp_lambda(l, r_max);
    let ranks = Fedp2eft::with_lambda(&scores).ranks_only().setup(&client)?;
    assert_eq!(ranks.plan.keep, select_top(&scores, l, r_max, budget)?.keep);
    assert!(ranks.plan.lambda.iter().flatten().all(|&v| v == 1.0));
    assert_eq!(ranks.plan.total_rank(), budget * l);

    let priors = PriorConfig::default();
    let floor = priors.clamp_min as f32;
    // Raw λ: all under the floor but distinct, and a few large ones.
    let raw: Vec<f32> = (0..l * r_max)
        .map(|i| match i % 37 {
            0 => 0.5 + i as f32 * 1e-4,
            _ => floor * (i as f32 / (l * r_max) as f32) * 0.5,
        })
        .collect();
    let bt = BtLora {
        raw: &raw,
        priors: &priors,
    }
    .setup(&client)?;
    let clamped: Vec<f32> = raw
        .iter()
        .map(|x| x.clamp(floor, priors.clamp_max as f32))
        .collect();
    let want = select_top_by(&raw, &clamped, l, r_max, budget)?;
    assert_eq!(bt.plan, want);
    assert_ne!(
        bt.plan.keep,
        select_top(&clamped, l, r_max, budget)?.keep,
        "ties at the floor are broken by the raw λ, not by layer order"
    );
    let trained: Vec<usize> = bt
        .model
        .linears()
        .iter()
        .filter_map(|x| x.adapter.as_ref().map(|a| a.rank()))
        .collect();
    assert_eq!(trained.iter().sum::<usize>(), budget * l);
    assert!(
        bt.params.lambda.is_empty(),
        "λ stays frozen in the fine-tune"
    );

    let plain = Lora.setup(&client)?;
    assert!(plain.plan.keep.iter().all(|k| k == &vec![0, 1]));
    Ok(())
}
