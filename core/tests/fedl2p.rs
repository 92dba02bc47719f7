//! FedL2P's first-order hypergradient on a real model (MiniLM, every Linear adapted, LoRA r = 2):
//! the tracked AdamW direction is the step the optimiser really took, ∂L_val/∂η agrees with
//! central differences of the validation loss along the last step, a meta step lowers the
//! first-order validation loss, and meta-training refuses what it cannot serve.
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer as _;
use fedp2eft_core::adapter::LoraConfig;
use fedp2eft_core::method::fedl2p::{
    lr_gradient, meta_step, meta_train, LastDirection, MetaClient,
};
use fedp2eft_core::method::{Client, Fedl2p, Fedl2pConfig, Lora, LrNet, LrNetMeta, Method};
use fedp2eft_core::model::{load_hf, SeqClassifier};
use fedp2eft_core::train::{
    batch_loss, make_batch, run_with, Dataset, Encoded, ModelTask, Objective, StepHook, TrainConfig,
};
use fedp2eft_core::{Control, Error};

const LABELS: usize = 3;

fn base() -> anyhow::Result<SeqClassifier> {
    Ok(load_hf(
        &fedp2eft_core::home::minilm_dir(),
        LABELS,
        42,
        &Device::Cpu,
    )?)
}

/// Deterministic sentences of real word-piece ids whose label follows their first word.
fn examples(n: usize, salt: usize) -> Vec<Encoded> {
    (0..n)
        .map(|k| {
            let label = (k % LABELS) as u32;
            let mut ids = vec![101, 2000 + 7 * label];
            ids.extend((0..6 + k % 5).map(|j| 1996 + ((k * 31 + j * 17 + salt) % 4000) as u32));
            ids.push(102);
            Encoded { ids, label }
        })
        .collect()
}

/// The optimiser's last step, seen from outside: θ before it and after it.
struct Snapshot {
    inner: LastDirection,
    vars: Vec<Var>,
    before_last: Vec<Tensor>,
}

impl StepHook for Snapshot {
    fn after_step(
        &mut self,
        step: usize,
        total: usize,
        g: &GradStore,
    ) -> fedp2eft_core::Result<()> {
        if step + 1 == total {
            self.before_last = self
                .vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?;
        }
        self.inner.after_step(step, total, g)
    }
}

fn val_loss(model: &SeqClassifier, val: &[Encoded]) -> anyhow::Result<Tensor> {
    let idx: Vec<usize> = (0..val.len()).collect();
    let b = make_batch(val, &idx, 0, &Device::Cpu)?;
    Ok(batch_loss(model, &b.ids, &b.mask, &b.labels, &Objective::CrossEntropy)?.0)
}

#[test]
fn first_order_hypergradient_matches_the_step_taken_and_finite_differences() -> anyhow::Result<()> {
    let base = base()?;
    let (train_enc, val_enc) = (examples(12, 0), examples(6, 500));
    let train = Dataset {
        examples: &train_enc,
        pad_id: 0,
    };
    let (ctl, lora) = (Control::default(), LoraConfig::default());
    let fit = TrainConfig {
        batch_size: 4,
        ..TrainConfig::default()
    };
    let setup = Lora.setup(&Client {
        base: &base,
        train: &train,
        budget: 2,
        lora: &lora,
        steps: 6,
        ctl: &ctl,
    })?;
    let mut params = setup.params;
    let n = params.ab.len();
    assert_eq!(n, 2 * base.num_adapted());
    // Distinct rates, large enough that the last step moves the validation loss measurably.
    params.ab_lr = (0..n).map(|m| 2e-3 * (1.0 + (m % 5) as f64)).collect();
    let mut hook = Snapshot {
        inner: LastDirection::new(&params.ab, &fit)?,
        vars: params.ab.clone(),
        before_last: Vec::new(),
    };
    let task = ModelTask {
        model: &setup.model,
        data: &train,
        objective: &Objective::CrossEntropy,
    };
    let report = run_with(&task, &fit, &params, &mut hook, "t", &ctl)?;
    assert_eq!(report.steps, 6);

    // θ_{T−1} − θ_T = η_m · d_m for every matrix, including the A matrices (whose first-step
    // gradient is 0 as B starts at 0).
    for m in 0..n {
        let d = hook.inner.direction[m]
            .as_ref()
            .expect("every matrix had a gradient");
        let moved = (&hook.before_last[m] - params.ab[m].as_tensor())?;
        let want = (d * params.ab_lr[m])?;
        let err = (&moved - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(scale > 0.0, "matrix {m} did not move");
        assert!(err <= 1e-6 + 1e-4 * scale, "matrix {m}: {err} vs {scale}");
    }

    let loss = val_loss(&setup.model, &val_enc)?;
    let h = lr_gradient(&params.ab, &hook.inner.direction, &loss.backward()?)?;
    // Central differences along the last step of a few matrices: θ_m = θ_{T−1} − (η_m ± δ) d_m.
    let delta = 2e-3;
    let mut checked = 0;
    for m in (0..n).step_by(n / 6).chain([n - 1, n - 2]) {
        let d = hook.inner.direction[m].clone().expect("direction");
        let at = |eta: f64| -> anyhow::Result<f64> {
            params.ab[m].set(&(&hook.before_last[m] - (&d * eta)?)?)?;
            Ok(f64::from(
                val_loss(&setup.model, &val_enc)?.to_scalar::<f32>()?,
            ))
        };
        let eta = params.ab_lr[m];
        let fd = (at(eta + delta)? - at(eta - delta)?) / (2.0 * delta);
        at(eta)?;
        assert!(
            (fd - h[m]).abs() <= 2e-3 + 0.05 * h[m].abs(),
            "matrix {m}: finite difference {fd} vs {}",
            h[m]
        );
        checked += 1;
    }
    assert!(checked >= 6);
    assert!(
        h.iter().any(|v| v.abs() > 1e-3),
        "no measurable hypergradient: {h:?}"
    );
    Ok(())
}

fn net_for(base: &SeqClassifier) -> anyhow::Result<LrNet> {
    Ok(LrNet::new(
        LrNetMeta::new(base.model_id(), base.num_adapted()),
        Fedl2pConfig::default(),
        7,
    )?)
}

#[test]
fn a_meta_step_lowers_the_first_order_validation_loss() -> anyhow::Result<()> {
    let base = base()?;
    let net = net_for(&base)?;
    let n = 2 * base.num_adapted();
    let x: Vec<f32> = (0..n).map(|k| 0.1 + 0.01 * k as f32).collect();
    let h: Vec<f64> = (0..n).map(|m| ((m as f64) * 0.7).sin() * 1e3).collect();
    let before = net.learning_rates(&x)?;
    assert_eq!(before.len(), n);
    let adam = |vars: Vec<Var>, lr: f64| {
        candle_nn::AdamW::new(
            vars,
            candle_nn::ParamsAdamW {
                lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
    };
    let (mut opt_net, mut opt_inner) = (
        adam(net.net_vars(), 1e-2)?,
        adam(vec![net.inner_lr.clone()], 1e-6)?,
    );
    meta_step(&net, &net.forward(&x)?, &h, &mut opt_net, &mut opt_inner)?;
    let after = net.learning_rates(&x)?;
    let change: f64 = h
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(h, (b, a))| h * (a - b))
        .sum();
    assert!(change < 0.0, "Σ ∂L/∂η · Δη = {change} must be negative");
    Ok(())
}

#[test]
fn meta_training_updates_the_net_and_refuses_what_it_cannot_serve() -> anyhow::Result<()> {
    let base = base()?;
    let enc = examples(15, 3);
    let train = Dataset {
        examples: &enc,
        pad_id: 0,
    };
    let (ctl, lora) = (Control::default(), LoraConfig::default());
    let fit = TrainConfig {
        batch_size: 4,
        epochs: 1,
        ..TrainConfig::default()
    };
    let client = MetaClient {
        base: &base,
        train: &train,
        budget: 2,
        lora: &lora,
        fit: &fit,
        ctl: &ctl,
    };
    let net = net_for(&base)?;
    let w0 = net.layers[2].0.as_tensor().copy()?;
    let report = meta_train(&net, &client)?;
    assert_eq!(report.val_loss.len(), 3);
    assert_eq!((report.inner_examples, report.val_examples), (12, 3));
    assert!(report
        .val_loss
        .iter()
        .chain(&report.train_loss)
        .all(|v| v.is_finite()));
    let moved = (net.layers[2].0.as_tensor() - &w0)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(moved > 0.0, "the meta-net did not move");
    assert!(report.mean_lr > 0.0);

    // The method then fine-tunes every matrix at the net's rate for this client.
    let setup = Fedl2p(&net).setup(&Client {
        base: &base,
        train: &train,
        budget: 2,
        lora: &lora,
        steps: 4,
        ctl: &ctl,
    })?;
    let x = fedp2eft_core::features::extract(&base, &train, &ctl)?;
    assert_eq!(setup.params.ab_lr, net.learning_rates(&x)?);

    let wrong = LrNet::new(
        LrNetMeta::new(base.model_id(), base.num_adapted() + 1),
        Fedl2pConfig::default(),
        7,
    )?;
    assert!(matches!(
        meta_train(&wrong, &client),
        Err(Error::Mismatch(_))
    ));
    assert!(matches!(
        Fedl2p(&wrong).check(&base, &lora),
        Err(Error::Mismatch(_))
    ));
    let decay = TrainConfig {
        weight_decay: 0.01,
        ..fit.clone()
    };
    let r = meta_train(
        &net,
        &MetaClient {
            fit: &decay,
            ..client
        },
    );
    assert!(matches!(r, Err(Error::Config(_))), "{:?}", r.err());
    let one = Dataset {
        examples: &enc[..1],
        pad_id: 0,
    };
    let r = meta_train(
        &net,
        &MetaClient {
            train: &one,
            ..client
        },
    );
    assert!(matches!(r, Err(Error::EmptyData(_))), "{:?}", r.err());
    let bad = Fedl2pConfig {
        val_ratio: 1.0,
        ..Fedl2pConfig::default()
    };
    assert!(matches!(
        LrNet::new(LrNetMeta::new("m", 3), bad, 0),
        Err(Error::Config(_))
    ));
    Ok(())
}

#[test]
fn a_meta_net_file_round_trips_and_nothing_else_reads_as_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let net = LrNet::new(LrNetMeta::new("m", 3), Fedl2pConfig::default(), 5)?;
    net.inner_lr.set(&Tensor::from_slice(
        &[1e-4f32, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4],
        6,
        &Device::Cpu,
    )?)?;
    let path = dir.path().join("lrnet.safetensors");
    net.save(&path)?;
    let back = LrNet::load(&path)?;
    assert_eq!((&back.meta, &back.config), (&net.meta, &net.config));
    let x = [0.5f32, 1.0, -0.2, 0.7, 0.1, 0.3];
    assert_eq!(back.learning_rates(&x)?, net.learning_rates(&x)?);

    let psg = fedp2eft_core::psg::Psg::new(
        fedp2eft_core::psg::PsgMeta {
            base_model: "m".into(),
            num_layers: 3,
            r_max: 4,
            feature_layout: fedp2eft_core::psg::FEATURE_LAYOUT.into(),
        },
        Default::default(),
        0,
    )?;
    let psg_path = dir.path().join("psg.safetensors");
    psg.save(&psg_path)?;
    assert!(matches!(LrNet::load(&psg_path), Err(Error::Format { .. })));
    assert!(matches!(
        fedp2eft_core::psg::Psg::load(&path),
        Err(Error::Format { .. })
    ));
    net.layers[1]
        .1
        .set(&Tensor::full(f32::NAN, 100, &Device::Cpu)?)?;
    net.save(&path)?;
    assert!(matches!(LrNet::load(&path), Err(Error::Format { .. })));
    std::fs::write(&path, b"truncated")?;
    assert!(matches!(LrNet::load(&path), Err(Error::Format { .. })));
    Ok(())
}
