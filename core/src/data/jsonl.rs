//! Any labelled text data set as JSON lines, so the same commands run on other real data (the
//! paper's XNLI or MasakhaNEWS exported on a machine that has them).
//!
//! One example per line:
//! `{"text": "...", "label": 3 | "sports", "client": "c0", "language": "en",
//!   "split": "train" | "test" (optional), "pool": "seen" | "unseen" (optional, default seen)}`.
//! Other fields are ignored; blank lines are skipped.
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::example::{Benchmark, ClientData, Example, Pool};
use super::partition::derive_seed;
use crate::{Error, Result};

/// How examples without a `split` field are divided into train and test.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonlOptions {
    /// Share of each client's unsplit examples held out for test (rounded up, as scikit-learn's
    /// `train_test_split`, the authors' choice for Fed-Aya's 80/20).
    pub test_fraction: f64,
    /// Seeds the per-client shuffle before the split.
    pub seed: u64,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        Self {
            test_fraction: 0.2,
            seed: 42,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Split {
    Train,
    Test,
}

/// A line as written; every field optional so that a missing one gets our own message.
#[derive(Deserialize)]
struct RawLine {
    text: Option<String>,
    label: Option<serde_json::Value>,
    client: Option<String>,
    language: Option<String>,
    split: Option<Split>,
    pool: Option<Pool>,
}

enum RawLabel {
    Id(usize),
    Name(String),
}

struct RawExample {
    text: String,
    label: RawLabel,
    split: Option<Split>,
}

struct RawClient {
    id: String,
    language: String,
    pool: Option<Pool>,
    examples: Vec<RawExample>,
}

/// Reads a JSON-lines file into a benchmark named after the file stem.
pub fn load_jsonl(path: &Path, opts: &JsonlOptions) -> Result<Benchmark> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    parse_jsonl(BufReader::new(file), path, opts)
}

/// Parses JSON lines from `reader`; `path` names the source in errors and the benchmark.
///
/// Integer labels keep their ids (`num_labels` = max + 1); string labels get ids in sorted
/// order and keep their names. Clients appear in order of their first line.
pub fn parse_jsonl(reader: impl BufRead, path: &Path, opts: &JsonlOptions) -> Result<Benchmark> {
    if !(0.0..1.0).contains(&opts.test_fraction) {
        let f = opts.test_fraction;
        return Err(Error::Config(format!(
            "test_fraction must be in [0, 1), got {f}"
        )));
    }
    let bad = |line: usize, reason: String| {
        Error::format("jsonl", path, format!("line {line}: {reason}"))
    };
    let mut clients: Vec<RawClient> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut string_labels: Option<bool> = None;
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => bad(n, e.to_string()), // not UTF-8
            _ => Error::io(path, e),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawLine = serde_json::from_str(&line).map_err(|e| bad(n, e.to_string()))?;
        let missing = |field: &str| bad(n, format!("missing field `{field}`"));
        let text = raw.text.ok_or_else(|| missing("text"))?;
        if text.trim().is_empty() {
            return Err(bad(n, "empty `text`".into()));
        }
        let label =
            parse_label(raw.label.ok_or_else(|| missing("label"))?).map_err(|r| bad(n, r))?;
        let is_string = matches!(label, RawLabel::Name(_));
        if *string_labels.get_or_insert(is_string) != is_string {
            return Err(bad(n, "labels mix integers and strings".into()));
        }
        let id = raw.client.ok_or_else(|| missing("client"))?;
        let language = raw.language.ok_or_else(|| missing("language"))?;
        if id.is_empty() || language.is_empty() {
            return Err(bad(n, "empty `client` or `language`".into()));
        }
        let k = *index.entry(id.clone()).or_insert_with(|| {
            let (language, pool) = (language.clone(), raw.pool);
            clients.push(RawClient {
                id,
                language,
                pool,
                examples: Vec::new(),
            });
            clients.len() - 1
        });
        let client = &mut clients[k];
        if client.language != language {
            let first = &client.language;
            return Err(bad(
                n,
                format!(
                    "client `{}` has languages {first} and {language}",
                    client.id
                ),
            ));
        }
        match (client.pool, raw.pool) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(n, format!("client `{}` is in both pools", client.id)))
            }
            (None, p) => client.pool = p,
            _ => {}
        }
        client.examples.push(RawExample {
            text,
            label,
            split: raw.split,
        });
    }
    if clients.is_empty() {
        return Err(Error::EmptyData(format!(
            "no examples in {}",
            path.display()
        )));
    }

    // Label ids: integers as written, strings in sorted order.
    let names: BTreeSet<&str> = clients
        .iter()
        .flat_map(|c| &c.examples)
        .filter_map(|e| match &e.label {
            RawLabel::Name(s) => Some(s.as_str()),
            RawLabel::Id(_) => None,
        })
        .collect();
    let label_names: Vec<String> = if names.is_empty() {
        let max = clients
            .iter()
            .flat_map(|c| &c.examples)
            .filter_map(|e| match e.label {
                RawLabel::Id(l) => Some(l),
                RawLabel::Name(_) => None,
            });
        (0..=max.max().unwrap_or(0))
            .map(|l| l.to_string())
            .collect()
    } else {
        names.iter().map(|s| s.to_string()).collect()
    };
    let id_of: HashMap<&str, usize> = names.iter().enumerate().map(|(i, s)| (*s, i)).collect();

    let mut out = Vec::with_capacity(clients.len());
    for c in &clients {
        let example = |e: &RawExample| Example {
            text: e.text.clone(),
            label: match &e.label {
                RawLabel::Id(l) => *l,
                RawLabel::Name(s) => id_of.get(s.as_str()).copied().unwrap_or_default(),
            },
            client: c.id.clone(),
            language: c.language.clone(),
        };
        let mut train = Vec::new();
        let mut test = Vec::new();
        let mut unsplit = Vec::new();
        for e in &c.examples {
            match e.split {
                Some(Split::Train) => train.push(example(e)),
                Some(Split::Test) => test.push(example(e)),
                None => unsplit.push(example(e)),
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(opts.seed, &c.id));
        unsplit.shuffle(&mut rng);
        let n = unsplit.len();
        let n_test = ((n as f64 * opts.test_fraction).ceil() as usize).min(n.saturating_sub(1));
        test.extend(unsplit.drain(n - n_test..));
        train.extend(unsplit);
        out.push(ClientData {
            id: c.id.clone(),
            language: c.language.clone(),
            pool: c.pool.unwrap_or(Pool::Seen),
            train,
            test,
        });
    }
    let name = path
        .file_stem()
        .map_or_else(|| "jsonl".into(), |s| s.to_string_lossy().into_owned());
    Ok(Benchmark {
        name,
        num_labels: label_names.len(),
        label_names,
        clients: out,
    })
}

/// Writes every example with its `split` and `pool`, labels as integer ids, so that
/// `load_jsonl` gives back the same clients and splits (label names become `"0"`, `"1"`, …).
pub fn write_jsonl(path: &Path, bench: &Benchmark) -> Result<()> {
    #[derive(Serialize)]
    struct Line<'a> {
        text: &'a str,
        label: usize,
        client: &'a str,
        language: &'a str,
        split: Split,
        pool: Pool,
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::new(file);
    for c in &bench.clients {
        let splits = [(Split::Train, &c.train), (Split::Test, &c.test)];
        for (split, e) in splits
            .iter()
            .flat_map(|(s, es)| es.iter().map(move |e| (*s, e)))
        {
            let line = Line {
                text: &e.text,
                label: e.label,
                client: &c.id,
                language: &c.language,
                split,
                pool: c.pool,
            };
            let json = serde_json::to_string(&line)
                .map_err(|e| Error::format("jsonl", path, e.to_string()))?;
            writeln!(w, "{json}").map_err(|e| Error::io(path, e))?;
        }
    }
    w.flush().map_err(|e| Error::io(path, e))
}

fn parse_label(v: serde_json::Value) -> std::result::Result<RawLabel, String> {
    match v {
        serde_json::Value::String(s) if s.trim().is_empty() => Err("empty `label`".into()),
        serde_json::Value::String(s) => Ok(RawLabel::Name(s)),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(l), _) => usize::try_from(l)
                .map(RawLabel::Id)
                .map_err(|e| e.to_string()),
            (None, Some(l)) => Err(format!("negative label {l}")),
            _ => Err(format!("label {n} is not an integer")),
        },
        other => Err(format!("label must be an integer or a string, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Benchmark> {
        parse_jsonl(
            text.as_bytes(),
            Path::new("t.jsonl"),
            &JsonlOptions::default(),
        )
    }

    fn err(text: &str) -> String {
        parse(text).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn groups_clients_maps_string_labels_and_splits_80_20() -> Result<()> {
        let mut s = String::new();
        for i in 0..10 {
            let label = ["sports", "health", "politics"][i % 3];
            s += &format!(r#"{{"text":"t{i}","label":"{label}","client":"a","language":"en"}}"#);
            s += "\n\n";
        }
        s += r#"{"text":"u","label":"health","client":"b","language":"yo","pool":"unseen","split":"test"}"#;
        let b = parse(&s)?;
        assert_eq!(b.name, "t");
        assert_eq!(b.label_names, vec!["health", "politics", "sports"]);
        let a = b.client("a").ok_or(Error::Data("no client a".into()))?;
        assert_eq!((a.train.len(), a.test.len(), a.pool), (8, 2, Pool::Seen));
        let bb = b.client("b").ok_or(Error::Data("no client b".into()))?;
        assert_eq!(
            (bb.train.len(), bb.test.len(), bb.pool),
            (0, 1, Pool::Unseen)
        );
        assert_eq!(bb.test[0].label, 0);
        assert_eq!(b.languages(), vec!["en", "yo"]);
        assert_eq!(parse(&s)?, b, "seeded split is deterministic");
        Ok(())
    }

    #[test]
    fn integer_labels_keep_their_ids() -> Result<()> {
        let b = parse(r#"{"text":"x","label":4,"client":"a","language":"en"}"#)?;
        assert_eq!(b.num_labels, 5);
        assert_eq!(b.clients[0].train[0].label, 4);
        Ok(())
    }

    #[test]
    fn errors_name_the_line() {
        let ok = r#"{"text":"x","label":1,"client":"a","language":"en"}"#;
        let e = err(&format!("{ok}\n{{\"text\": \"x\", \"label\"\n"));
        assert!(e.contains("line 2"), "{e}");
        let e = err(&format!(
            "{ok}\n\n{}",
            r#"{"text":"x","client":"a","language":"en"}"#
        ));
        assert!(e.contains("line 3") && e.contains("`label`"), "{e}");
        let e = err(r#"{"text":"  ","label":1,"client":"a","language":"en"}"#);
        assert!(e.contains("line 1") && e.contains("empty `text`"), "{e}");
        let e = err(&format!(
            "{ok}\n{}",
            r#"{"text":"x","label":-2,"client":"a","language":"en"}"#
        ));
        assert!(
            e.contains("line 2") && e.contains("negative label -2"),
            "{e}"
        );
        let e = err(&format!(
            "{ok}\n{}",
            r#"{"text":"x","label":"b","client":"a","language":"en"}"#
        ));
        assert!(e.contains("line 2") && e.contains("mix"), "{e}");
        let e = err(&format!(
            "{ok}\n{}",
            r#"{"text":"x","label":1,"client":"a","language":"fr"}"#
        ));
        assert!(e.contains("line 2") && e.contains("languages"), "{e}");
        assert!(matches!(parse("\n\n"), Err(Error::EmptyData(_))));
        assert!(matches!(
            parse("[1]"),
            Err(Error::Format { kind: "jsonl", .. })
        ));
    }
}
