//! The emoji benchmark built from the real emojibase-data@17.0.0 files that `fedp2eft fetch`
//! installs (docs/data.md). No skip when they are absent: the test fails and says what to run.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use fedp2eft_core::data::{
    load_emoji, load_jsonl, write_jsonl, Benchmark, EmojiConfig, EmojiTask, JsonlOptions, Pool,
};
use fedp2eft_core::home;

fn data_dir() -> Result<PathBuf> {
    let dir = home::emojibase_dir();
    if !dir.join("meta").join("groups.json").is_file() {
        bail!(
            "emojibase-data not found at {}: run `fedp2eft fetch` (or set FEDP2EFT_HOME)",
            dir.display()
        );
    }
    Ok(dir)
}

fn load(cfg: &EmojiConfig) -> Result<Benchmark> {
    Ok(load_emoji(&data_dir()?, cfg)?)
}

fn has_script(text: &str, range: std::ops::RangeInclusive<u32>) -> bool {
    text.chars().any(|c| range.contains(&(c as u32)))
}

#[test]
fn default_benchmark_shape_and_coverage() -> Result<()> {
    let cfg = EmojiConfig::default();
    let b = load(&cfg)?;
    let k = cfg.clients_per_language;
    assert_eq!(b.name, "emoji-group");
    assert_eq!(b.languages(), cfg.locales);
    assert_eq!(b.clients.len(), cfg.locales.len() * 2 * k);
    assert_eq!(b.pool(Pool::Seen).len(), cfg.locales.len() * k);
    // 10 groups less "component" and "flags", renumbered 0..8 with their names kept.
    assert_eq!(b.num_labels, 8);
    assert_eq!(
        b.label_names.first().map(String::as_str),
        Some("smileys-emotion")
    );
    assert!(!b
        .label_names
        .iter()
        .any(|n| n == "flags" || n == "component"));
    assert!(b.client("seen-hi-3").is_some() && b.client("unseen-th-0").is_some());

    let mut seen_texts: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut per_pool: BTreeMap<(&str, Pool), BTreeSet<&str>> = BTreeMap::new();
    for c in &b.clients {
        ensure!(
            !c.train.is_empty() && !c.test.is_empty(),
            "client {} is empty",
            c.id
        );
        for e in c.examples() {
            ensure!(e.label < b.num_labels, "label {} out of range", e.label);
            ensure!(!e.text.trim().is_empty(), "empty text in {}", c.id);
            ensure!(
                e.client == c.id && e.language == c.language,
                "tags of {}",
                c.id
            );
            // Every item appears exactly once across a language's clients.
            let new = seen_texts
                .entry(c.language.as_str())
                .or_default()
                .insert(&e.text);
            ensure!(new, "{} appears twice in {}", e.text, c.language);
            per_pool
                .entry((c.language.as_str(), c.pool))
                .or_default()
                .insert(&e.text);
        }
    }
    for locale in &cfg.locales {
        // 1,644 emoji per locale once components and flags are dropped.
        assert_eq!(seen_texts[locale.as_str()].len(), 1644, "{locale}");
        let (s, u) = (
            &per_pool[&(locale.as_str(), Pool::Seen)],
            &per_pool[&(locale.as_str(), Pool::Unseen)],
        );
        assert!(s.is_disjoint(u), "{locale}: seen and unseen overlap");
        assert_eq!((s.len(), u.len()), (822, 822), "{locale}");
    }
    // Scripts: Thai, Devanagari, Hangul, Cyrillic. CLDR leaves a few names untranslated
    // (Hindi "trombone"), so ask for all but 1 %.
    for (locale, range) in [
        ("th", 0x0E00..=0x0E7F),
        ("hi", 0x0900..=0x097F),
        ("ko", 0xAC00..=0xD7AF),
        ("ru", 0x0400..=0x04FF),
    ] {
        let texts: Vec<&str> = b
            .clients
            .iter()
            .filter(|c| c.language == locale)
            .flat_map(|c| c.examples().map(|e| e.text.as_str()))
            .collect();
        let other = texts
            .iter()
            .filter(|t| !has_script(t, range.clone()))
            .count();
        ensure!(
            other * 100 <= texts.len(),
            "{locale}: {other} texts without its script"
        );
    }
    // Dirichlet(0.5) label skew: clients' label mixes are narrower than their language's.
    let entropy = |labels: &mut dyn Iterator<Item = usize>| {
        let mut counts = vec![0usize; b.num_labels];
        labels.for_each(|l| counts[l] += 1);
        let n: usize = counts.iter().sum();
        let p = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| c as f64 / n as f64);
        p.map(|p| -p * p.ln()).sum::<f64>()
    };
    let clients = b.clients.iter().filter(|c| c.language == "en");
    let mean = clients
        .clone()
        .map(|c| entropy(&mut c.train.iter().map(|e| e.label)))
        .sum::<f64>()
        / (2 * k) as f64;
    let pooled = entropy(&mut clients.flat_map(|c| c.train.iter().map(|e| e.label)));
    println!("en train label entropy: mean per client {mean:.3}, pooled {pooled:.3}");
    assert!(
        mean < 0.85 * pooled,
        "no visible label skew: {mean} vs {pooled}"
    );
    print_sizes(&b);
    Ok(())
}

/// Prints the sizes quoted in reports (`cargo test -- --nocapture`).
fn print_sizes(b: &Benchmark) {
    let n = b.clients.len() as f64;
    let train: usize = b.clients.iter().map(|c| c.train.len()).sum();
    let test: usize = b.clients.iter().map(|c| c.test.len()).sum();
    let sizes = |f: fn(&fedp2eft_core::data::ClientData) -> usize| {
        let v: Vec<usize> = b.clients.iter().map(f).collect();
        (v.iter().min().copied(), v.iter().max().copied())
    };
    println!(
        "{}: {} languages, {} clients, {} labels; per client train {:.1} (min/max {:?}), test {:.1} (min/max {:?})",
        b.name,
        b.languages().len(),
        b.clients.len(),
        b.num_labels,
        train as f64 / n,
        sizes(|c| c.train.len()),
        test as f64 / n,
        sizes(|c| c.test.len()),
    );
}

#[test]
fn same_emoji_split_in_every_language() -> Result<()> {
    // The pool and split of an emoji do not depend on the language: compare by label counts
    // over the whole seen-test side, which only match if the same emoji landed there.
    let b = load(&EmojiConfig::default())?;
    let counts = |locale: &str, pool: Pool| {
        let mut v = vec![0usize; b.num_labels];
        for c in b.pool(pool).into_iter().filter(|c| c.language == locale) {
            c.test.iter().for_each(|e| v[e.label] += 1);
        }
        v
    };
    for pool in [Pool::Seen, Pool::Unseen] {
        assert_eq!(counts("en", pool), counts("th", pool));
        assert_eq!(counts("en", pool), counts("zh", pool));
    }
    Ok(())
}

#[test]
fn deterministic_with_seed() -> Result<()> {
    let cfg = EmojiConfig {
        locales: vec!["de".into(), "uk".into()],
        ..EmojiConfig::default()
    };
    let a = load(&cfg)?;
    assert_eq!(a, load(&cfg)?);
    let other = load(&EmojiConfig { seed: 7, ..cfg })?;
    assert_ne!(a.clients, other.clients);
    Ok(())
}

#[test]
fn subgroup_task_and_flags() -> Result<()> {
    let base = EmojiConfig {
        locales: vec!["ja".into()],
        ..EmojiConfig::default()
    };
    let sub = load(&EmojiConfig {
        task: EmojiTask::Subgroup,
        ..base.clone()
    })?;
    assert_eq!(sub.name, "emoji-subgroup");
    assert_eq!(sub.num_labels, 95);
    assert!(sub
        .clients
        .iter()
        .flat_map(|c| c.examples())
        .all(|e| e.label < 95));
    let flags = load(&EmojiConfig {
        drop_flags: false,
        ..base
    })?;
    assert_eq!(flags.num_labels, 9);
    assert_eq!(flags.num_examples(), 1644 + 270);
    Ok(())
}

#[test]
fn jsonl_round_trip_of_real_items() -> Result<()> {
    let cfg = EmojiConfig {
        locales: vec!["th".into(), "bn".into()],
        clients_per_language: 2,
        ..EmojiConfig::default()
    };
    let mut b = load(&cfg)?;
    for c in &mut b.clients {
        c.train.truncate(3);
        c.test.truncate(2);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("emoji.jsonl");
    write_jsonl(&path, &b)?;
    let back = load_jsonl(&path, &JsonlOptions::default()).context("reading back")?;
    assert_eq!(back.name, "emoji");
    assert_eq!(back.clients, b.clients);
    assert!(back.num_labels <= b.num_labels);
    Ok(())
}
