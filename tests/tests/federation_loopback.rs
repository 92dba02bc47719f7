//! The federation end to end over real HTTP on loopback: the aggregation server (SQLite in a
//! temp dir) and three real clients (MiniLM + emoji-benchmark data, core's HTTP client) run two
//! rounds; the server's φ_{k+1} must equal FedAvg of the updates the clients computed.
use std::sync::Arc;
use std::thread;

use candle_core::Device;
use fedp2eft_core::adapter::LoraConfig;
use fedp2eft_core::data::{load_emoji, EmojiConfig};
use fedp2eft_core::federated::convert::{layout, to_params};
use fedp2eft_core::federated::http::{Admin, FedClient, RoundOutcome};
use fedp2eft_core::federated::RoundConfig;
use fedp2eft_core::model::{load_hf, HfTokenizer};
use fedp2eft_core::psg::{Psg, PsgConfig, PsgMeta, FEATURE_LAYOUT};
use fedp2eft_core::train::TrainConfig;
use fedp2eft_core::Control;
use fedp2eft_wire::{fedavg, CreateRun, Pool, Stage2, Task};

const ADMIN: &str = "admin-secret-for-tests";

/// Starts the server on 127.0.0.1:0 in its own runtime thread; returns its URL and a stopper.
fn start_server(
    db_dir: &std::path::Path,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let url = fedp2eft_server::Config::default_database_url(db_dir);
    let config = fedp2eft_server::Config::new(ADMIN, url);
    let rt = tokio::runtime::Runtime::new()?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    thread::spawn(move || {
        rt.block_on(async move {
            let state = fedp2eft_server::AppState::connect(config)
                .await
                .expect("store");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("send");
            let stop = async move {
                let _ = stop_rx.await;
            };
            fedp2eft_server::serve_on(listener, state, stop)
                .await
                .expect("serve");
        })
    });
    let addr = addr_rx.recv()?;
    Ok((format!("http://{addr}"), stop_tx))
}

#[test]
fn three_clients_two_rounds_over_loopback() -> anyhow::Result<()> {
    let dir = fedp2eft_core::home::minilm_dir();
    anyhow::ensure!(dir.exists(), "MiniLM missing: run `fedp2eft fetch`");
    let cfg = EmojiConfig {
        locales: vec!["en".into()],
        clients_per_language: 3,
        ..Default::default()
    };
    let bench = Arc::new(load_emoji(&fedp2eft_core::home::emojibase_dir(), &cfg)?);
    let model = Arc::new(load_hf(&dir, bench.num_labels, 42, &Device::Cpu)?);
    let tok = Arc::new(HfTokenizer::from_file(&dir.join("tokenizer.json"))?);
    let r_max = 4;
    let meta = PsgMeta {
        base_model: model.model_id(),
        num_layers: model.num_adapted(),
        r_max,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    let psg0 = Psg::new(meta, PsgConfig::default(), 42)?;
    let lay = layout(&psg0);

    let db = tempfile::tempdir()?;
    let (server, stop) = start_server(db.path())?;
    let ctl = Control::default();
    let admin = Admin::new(&server, ADMIN)?;
    let mut run = CreateRun::new("e2e", lay.clone());
    (run.fraction, run.rounds, run.min_completion, run.seed) = (1.0, 2, 1.0, 7);
    // Not the clients' defaults (10 steps, lr 1e-4): they must follow the run.
    run.stage2 = Stage2 { steps: 3, lr: 1e-3 };
    admin.create_run(&run, &psg0, &ctl)?;
    let seen: Vec<String> = bench
        .clients
        .iter()
        .filter(|c| c.pool == fedp2eft_core::data::Pool::Seen)
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(seen.len(), 3);
    let mut tokens = Vec::new();
    for id in &seen {
        tokens.push((id.clone(), admin.enroll("e2e", id, Pool::Seen, &ctl)?.token));
    }
    let unseen = admin.enroll("e2e", "unseen-en-0", Pool::Unseen, &ctl)?;
    // An unseen-pool client is never selected.
    let u = FedClient::new(&server, "e2e", &unseen.token)?;
    assert!(matches!(u.task(&ctl)?, Task::Wait { .. }));

    let round_cfg = RoundConfig {
        lora: LoraConfig {
            r: r_max,
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
    let handles: Vec<_> = tokens
        .into_iter()
        .map(|(id, token)| {
            let (server, lay, cfg) = (server.clone(), lay.clone(), round_cfg.clone());
            let (bench, model, tok) = (bench.clone(), model.clone(), tok.clone());
            thread::spawn(
                move || -> anyhow::Result<Vec<(u32, fedp2eft_wire::PsgParams, u64)>> {
                    let c = FedClient::new(&server, "e2e", &token)?;
                    let data = bench.client(&id).expect("client");
                    let mut ups = Vec::new();
                    loop {
                        let ctl = Control::default();
                        match c.join_round(&id, &model, tok.as_ref(), data, &lay, &cfg, &ctl)? {
                            RoundOutcome::Uploaded {
                                round,
                                accepted,
                                update,
                            } => {
                                assert!(!accepted.duplicate);
                                assert_eq!(update.stage2_loss.len(), 3, "the run's stage 2");
                                ups.push((
                                    round,
                                    to_params(&update.psg)?,
                                    update.num_samples as u64,
                                ));
                            }
                            RoundOutcome::Finished { round } => {
                                assert_eq!(round, 2);
                                return Ok(ups);
                            }
                        }
                    }
                },
            )
        })
        .collect();
    let mut by_round: Vec<Vec<(fedp2eft_wire::PsgParams, u64)>> = vec![Vec::new(), Vec::new()];
    for h in handles {
        for (round, p, n) in h.join().expect("client thread")? {
            by_round[round as usize].push((p, n));
        }
    }
    assert!(
        by_round.iter().all(|r| r.len() == 3),
        "every client trained both rounds"
    );
    for (k, ups) in by_round.iter().enumerate() {
        let refs: Vec<_> = ups.iter().map(|(p, n)| (p, *n)).collect();
        let want = fedavg(&refs)?;
        let got = to_params(&admin.psg("e2e", k as u32 + 1, &lay, &ctl)?)?;
        for (name, t) in want.iter() {
            let g = got.get(name).expect("tensor");
            let d = t
                .data()
                .iter()
                .zip(g.data())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d <= 1e-6, "round {k} {name}: |Δ| = {d}");
        }
    }
    let _ = stop.send(());
    Ok(())
}
