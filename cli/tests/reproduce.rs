//! `fedp2eft reproduce` end to end on `configs/tiny.toml` (MiniLM, MasakhaNEWS hau + yor from
//! `../shared/data` or `$FEDP2EFT_SHARED_DATA`): stopped after the base stage, resumed to the
//! end, the last evaluated cells deleted and recomputed, grown by a method, and refused on a
//! config that trains something else.
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{ensure, Result};

fn fedp2eft(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_fedp2eft"))
        .args(args)
        .output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shared() -> PathBuf {
    std::env::var_os("FEDP2EFT_SHARED_DATA")
        .map_or_else(|| repo().join("../shared/data"), PathBuf::from)
}

#[test]
fn tiny_reproduction_runs_every_stage_and_resumes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("run");
    let config = repo().join("configs/tiny.toml");
    let data = shared().join("masakhanews");
    let (config, data, out_s) = (
        config.to_string_lossy().into_owned(),
        data.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    );
    let args = [
        "reproduce",
        "--config",
        &config,
        "--data-dir",
        &data,
        "--out",
        &out_s,
    ];
    let mut first = args.to_vec();
    first.extend(["--until", "base"]);
    let o = fedp2eft(&first)?;
    ensure!(
        o.status.success(),
        "reproduce --until base: {}",
        text(&o.stderr)
    );
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("partition: 2 languages, 4 seen / 4 unseen clients"),
        "{stdout}"
    );
    assert!(stdout.contains("base round 2/2"), "{stdout}");
    assert!(out.join("base/model/model.safetensors").is_file());
    assert!(!out.join("psg").exists(), "stopped after the base stage");

    let o = fedp2eft(&args)?;
    ensure!(o.status.success(), "reproduce: {}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("resuming") && stdout.contains("base: done"),
        "{stdout}"
    );
    assert!(stdout.contains("psg round 2/2"), "{stdout}");
    for k in 0..=2 {
        assert!(
            out.join(format!("psg/round-{k}.safetensors")).is_file(),
            "round {k}"
        );
    }
    let rounds = std::fs::read_to_string(out.join("psg/rounds.jsonl"))?;
    assert_eq!(rounds.lines().count(), 2);
    let log: serde_json::Value = serde_json::from_str(rounds.lines().last().unwrap_or("{}"))?;
    assert!(
        log["lambda_hat"]["mean"].as_f64().is_some_and(|m| m > 0.0),
        "{log}"
    );
    assert!(log["lambda_hat"]["by_type"]["q"].is_number(), "{log}");
    // 2 pools × 2 languages × 1 client × (base + 6 methods × 1 budget × 2 seeds).
    let results = out.join("eval/results.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&results)?
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 52);
    let md = std::fs::read_to_string(out.join("results.md"))?;
    for s in [
        "## seen pool, r = 2",
        "## unseen pool, r = 2",
        "FedP²EFT",
        "LoRA (tuned lr)",
        "| AdaLoRA |",
        "| hau |",
    ] {
        assert!(md.contains(s), "`{s}` missing from results.md:\n{md}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json"))?)?;
    // FedP²EFT against LoRA, LoRA (tuned), BT-LoRA, AdaLoRA, PSG ranks and base, in both pools.
    assert_eq!(json["pairs"].as_array().map(Vec::len), Some(2 * 6));
    for p in json["pairs"].as_array().into_iter().flatten() {
        let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
        assert!(
            p["clients"].as_u64() > Some(0) && p["items"].as_u64() > Some(0),
            "{p}"
        );
        assert!(
            (f("ours_accuracy") - f("other_accuracy") - f("diff")).abs() < 1e-9,
            "the paired accuracies give Δ: {p}"
        );
    }

    // The figures, as PNG files.
    let o = fedp2eft(&["plot", &out_s])?;
    ensure!(o.status.success(), "plot: {}", text(&o.stderr));
    for f in [
        "accuracy-vs-budget-seen.png",
        "accuracy-vs-budget-unseen.png",
        "psg-lambda-hat.png",
        "ranks-seen-r2.png",
        "ranks-unseen-r2.png",
        "lambda-distance-seen.png",
    ] {
        let bytes = std::fs::read(out.join("figures").join(f))?;
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 2000,
            "{f}: {} bytes",
            bytes.len()
        );
    }

    // Killed during the evaluation: the missing cells are recomputed, nothing else.
    std::fs::write(&results, lines[..41].join("\n") + "\n")?;
    let o = fedp2eft(&args)?;
    ensure!(
        o.status.success(),
        "reproduce (resumed eval): {}",
        text(&o.stderr)
    );
    let stdout = text(&o.stdout);
    assert_eq!(
        stdout.matches("eval ").count(),
        1,
        "one client redone:\n{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&results)?.lines().count(), 52);

    // A grown grid (a method added) takes the run over: only the new cells are computed.
    let reproduce_with = |cfg_text: String, name: &str| -> Result<Output> {
        let path = tmp.path().join(name);
        std::fs::write(&path, cfg_text)?;
        let path = path.to_string_lossy().into_owned();
        let args = [
            "reproduce",
            "--config",
            &path,
            "--data-dir",
            &data,
            "--out",
            &out_s,
        ];
        fedp2eft(&args)
    };
    let tiny = std::fs::read_to_string(&config)?;
    let grown = tiny.replace("\"psg-ranks\"]", "\"psg-ranks\", \"fedp2eft-tuned\"]");
    assert_ne!(grown, tiny);
    let o = reproduce_with(grown, "grown.toml")?;
    ensure!(o.status.success(), "reproduce (grown): {}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("changed evaluation grid"), "{stdout}");
    assert!(stdout.contains("FedP²EFT (tuned lr) r = 2: lr"), "{stdout}");
    assert!(
        !stdout.contains("psg round"),
        "nothing retrained:\n{stdout}"
    );
    // + 4 clients × 2 seeds of the tuned FedP²EFT.
    assert_eq!(std::fs::read_to_string(&results)?.lines().count(), 60);
    let md = std::fs::read_to_string(out.join("results.md"))?;
    assert!(md.contains("| FedP²EFT (tuned lr) |"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json"))?)?;
    let pairs = json["pairs"].as_array().cloned().unwrap_or_default();
    assert_eq!(pairs.len(), 2 * 6);
    assert!(
        pairs
            .iter()
            .any(|p| p["ours"] == "fedp2eft-tuned" && p["other"] == "lora-tuned"),
        "tuned LoRA meets tuned FedP²EFT: {pairs:?}"
    );

    // FedL2P added afterwards: its nets are trained over the loopback server, nothing else.
    let fedl2p_grid = "\"psg-ranks\", \"fedp2eft-tuned\", \"fedl2p\"]";
    let with_fedl2p = |outer: usize| {
        tiny.replace("\"psg-ranks\"]", fedl2p_grid)
            + &format!(
                "[fedl2p]\nrounds = 2\nclients_per_round = 2\npatience = 0\n\
                 [fedl2p.meta]\nouter_steps = {outer}\nval_examples = 4\n"
            )
    };
    let o = reproduce_with(with_fedl2p(2), "fedl2p.toml")?;
    ensure!(
        o.status.success(),
        "reproduce (fedl2p): {}",
        text(&o.stderr)
    );
    let stdout = text(&o.stdout);
    assert!(stdout.contains("fedl2p r2 round 2/2"), "{stdout}");
    assert!(
        stdout.contains("fedl2p r = 2: the net of round"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("psg round"),
        "nothing else retrained:\n{stdout}"
    );
    for k in 0..=2 {
        assert!(out
            .join(format!("fedl2p/r2/round-{k}.safetensors"))
            .is_file());
    }
    let fl = std::fs::read_to_string(out.join("fedl2p/r2/rounds.jsonl"))?;
    let last: serde_json::Value = serde_json::from_str(fl.lines().last().unwrap_or("{}"))?;
    assert_eq!(
        last["val_loss"][0].as_array().map(Vec::len),
        Some(2),
        "{last}"
    );
    assert!(
        last["score_of_previous"]
            .as_f64()
            .is_some_and(f64::is_finite),
        "{last}"
    );
    // + 4 clients × 2 seeds of FedL2P.
    assert_eq!(std::fs::read_to_string(&results)?.lines().count(), 68);
    let md = std::fs::read_to_string(out.join("results.md"))?;
    assert!(md.contains("| FedL2P |"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json"))?)?;
    let pairs = json["pairs"].as_array().cloned().unwrap_or_default();
    assert!(
        pairs
            .iter()
            .any(|p| p["ours"] == "fedp2eft" && p["other"] == "fedl2p"),
        "FedP²EFT meets FedL2P: {pairs:?}"
    );
    // Its nets keep their settings: other meta-training settings are refused, not mixed.
    let o = reproduce_with(with_fedl2p(3), "fedl2p3.toml")?;
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("other FedL2P settings"),
        "{}",
        text(&o.stderr)
    );

    // The PSG trained on (2 → 3 rounds) continues from its last round; only the cells that read
    // it are evaluated anew, and those of round 2 stay for the table by round. Rows written
    // before cells carried their PSG round are stamped with the run's rounds first.
    let old: Vec<String> = std::fs::read_to_string(&results)?
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("psg_round");
            }
            Ok(v.to_string())
        })
        .collect::<Result<_>>()?;
    std::fs::write(&results, old.join("\n") + "\n")?;
    let three = with_fedl2p(2).replace("r_max = 4\nrounds = 2", "r_max = 4\nrounds = 3");
    assert_ne!(three, with_fedl2p(2));
    let o = reproduce_with(three, "psg3.toml")?;
    ensure!(o.status.success(), "reproduce (psg 3): {}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("PSG at round 3 (was 2)"), "{stdout}");
    assert!(stdout.contains("psg round 3/3"), "{stdout}");
    assert!(!stdout.contains("psg round 1/"), "{stdout}");
    assert!(!stdout.contains("fedl2p r2 round"), "{stdout}");
    assert!(out.join("psg/round-3.safetensors").is_file());
    // + 4 clients × 2 seeds of FedP²EFT, PSG ranks and tuned FedP²EFT.
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&results)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 92);
    let at = |k: u64| {
        rows.iter()
            .filter(|r| r["method"] == "fedp2eft" && r["psg_round"] == k)
            .count()
    };
    assert_eq!((at(2), at(3)), (8, 8));
    assert!(rows
        .iter()
        .filter(|r| r["method"] == "lora")
        .all(|r| r.get("psg_round").is_none()));
    let md = std::fs::read_to_string(out.join("results.md"))?;
    assert!(md.contains("## FedP²EFT − LoRA by PSG round"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json"))?)?;
    assert_eq!(json["psg_rounds"], 3);
    let by = json["by_psg_round"].as_array().cloned().unwrap_or_default();
    assert_eq!(by.len(), 2 * 2, "{by:?}");
    // Back to round 2: its φ and cells are all there, nothing is computed.
    let o = reproduce_with(with_fedl2p(2), "psg2.toml")?;
    ensure!(o.status.success(), "reproduce (psg 2): {}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("psg: done (2 rounds)"), "{stdout}");
    assert!(!stdout.contains("eval "), "{stdout}");
    assert_eq!(std::fs::read_to_string(&results)?.lines().count(), 92);

    // The folder belongs to what it trained: another PSG is refused.
    let o = reproduce_with(tiny.replace("r_max = 4", "r_max = 8"), "other.toml")?;
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("another configuration"),
        "{}",
        text(&o.stderr)
    );
    Ok(())
}
