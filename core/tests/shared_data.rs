//! The paper's data sets as they sit in `../shared/data` (or `$FEDP2EFT_SHARED_DATA`): row
//! counts as `../shared/data/README.md` lists them (counted there with Python's `csv`,
//! `delimiter='\t'`, default quoting), and the paper's pool protocol on them.
use std::collections::BTreeMap;
use std::path::PathBuf;

use fedp2eft_core::data::{
    load_masakhanews, load_sib200, read_tsv, MasakhaConfig, Pool, PoolProtocol, SibConfig,
};

fn shared() -> PathBuf {
    std::env::var_os("FEDP2EFT_SHARED_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
        PathBuf::from,
    )
}

#[test]
fn masakhanews_rows_match_the_readme() -> anyhow::Result<()> {
    let dir = shared().join("masakhanews");
    // (train, dev, test); 0 = no train.tsv.
    let expected = [
        ("amh", 0, 188, 376),
        ("eng", 0, 472, 948),
        ("fra", 0, 211, 422),
        ("hau", 0, 317, 637),
        ("ibo", 1356, 194, 390),
        ("lin", 608, 87, 175),
        ("lug", 771, 110, 223),
        ("orm", 1128, 162, 325),
        ("pcm", 1060, 152, 305),
        ("run", 1117, 159, 322),
        ("sna", 1288, 185, 369),
        ("som", 1021, 148, 294),
        ("swa", 0, 237, 476),
        ("tir", 0, 137, 272),
        ("xho", 1032, 147, 297),
        ("yor", 1433, 206, 411),
    ];
    for (lang, train, dev, test) in expected {
        let rows = |split: &str| -> anyhow::Result<usize> {
            let p = dir.join(lang).join(format!("{split}.tsv"));
            Ok(if p.exists() {
                read_tsv(&p)?.rows.len()
            } else {
                0
            })
        };
        assert_eq!(
            (rows("train")?, rows("dev")?, rows("test")?),
            (train, dev, test),
            "{lang}"
        );
    }
    Ok(())
}

#[test]
fn masakhanews_under_the_paper_protocol() -> anyhow::Result<()> {
    let m = load_masakhanews(&shared().join("masakhanews"), &MasakhaConfig::default())?;
    let b = &m.bench;
    assert_eq!(m.dev_only, vec!["amh", "eng", "fra", "hau", "swa", "tir"]);
    assert_eq!(b.languages().len(), 16);
    assert_eq!(b.clients.len(), 320);
    assert_eq!(
        b.label_names,
        [
            "business",
            "entertainment",
            "health",
            "politics",
            "religion",
            "sports",
            "technology"
        ]
    );
    // yor: train ∪ dev = 1639 → 819 seen / 820 unseen; test 411 → 205 / 206.
    let mut sizes: BTreeMap<(Pool, bool), usize> = BTreeMap::new();
    for c in b.clients.iter().filter(|c| c.language == "yor") {
        *sizes.entry((c.pool, false)).or_default() += c.train.len();
        *sizes.entry((c.pool, true)).or_default() += c.test.len();
    }
    let get = |p, t| sizes.get(&(p, t)).copied();
    assert_eq!(
        (get(Pool::Seen, false), get(Pool::Unseen, false)),
        (Some(819), Some(820))
    );
    assert_eq!(
        (get(Pool::Seen, true), get(Pool::Unseen, true)),
        (Some(205), Some(206))
    );
    // Every row of the 48 files once.
    assert_eq!(b.num_examples(), 20168);
    Ok(())
}

#[test]
fn sib200_is_parallel_across_languages() -> anyhow::Result<()> {
    let cfg = SibConfig {
        languages: vec!["eng_Latn".into(), "zho_Hans".into(), "amh_Ethi".into()],
        protocol: PoolProtocol {
            clients_per_language: 4,
            ..Default::default()
        },
    };
    let b = load_sib200(&shared().join("sib200"), &cfg)?;
    assert_eq!(b.num_labels, 7);
    assert_eq!(b.clients.len(), 3 * 2 * 4);
    // 800 training sentences → 400 per pool; 204 test → 102.
    for lang in ["eng_Latn", "zho_Hans", "amh_Ethi"] {
        let n: usize = b
            .clients
            .iter()
            .filter(|c| c.language == lang && c.pool == Pool::Seen)
            .map(|c| c.train.len())
            .sum();
        assert_eq!(n, 400, "{lang}");
    }
    // The same topic counts per pool in every language: the same sentences.
    let topics = |lang: &str| -> Vec<usize> {
        let mut v = vec![0; 7];
        b.clients
            .iter()
            .filter(|c| c.language == lang && c.pool == Pool::Unseen)
            .flat_map(|c| c.train.iter())
            .for_each(|e| v[e.label] += 1);
        v
    };
    assert_eq!(topics("eng_Latn"), topics("zho_Hans"));
    assert_eq!(topics("eng_Latn"), topics("amh_Ethi"));

    // amh as a novel language: the other two languages' clients are unchanged, and amh's four
    // clients hold the unseen half (the same topic counts as the unseen pool's).
    let novel = SibConfig {
        languages: vec!["eng_Latn".into(), "zho_Hans".into()],
        protocol: PoolProtocol {
            novel_languages: vec!["amh_Ethi".into()],
            ..cfg.protocol.clone()
        },
    };
    let n = load_sib200(&shared().join("sib200"), &novel)?;
    let ids = |b: &fedp2eft_core::data::Benchmark| -> Vec<String> {
        b.clients.iter().map(|c| c.id.clone()).collect()
    };
    assert_eq!(n.clients.len(), 2 * 2 * 4 + 4);
    assert_eq!(
        ids(&n)[16..],
        [
            "novel-amh_Ethi-0",
            "novel-amh_Ethi-1",
            "novel-amh_Ethi-2",
            "novel-amh_Ethi-3"
        ]
    );
    let same = |c: &&fedp2eft_core::data::ClientData| c.language != "amh_Ethi";
    assert!(n
        .clients
        .iter()
        .filter(same)
        .eq(b.clients.iter().filter(same)));
    let mut novel_topics = vec![0; 7];
    n.pool(Pool::Novel)
        .iter()
        .flat_map(|c| c.train.iter())
        .for_each(|e| novel_topics[e.label] += 1);
    assert_eq!(novel_topics, topics("eng_Latn"));
    Ok(())
}
