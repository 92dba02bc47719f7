//! The in-memory shape of a federated benchmark: labelled texts grouped into clients.
use serde::{Deserialize, Serialize};

/// One labelled text, tagged with the client that owns it and its language.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub text: String,
    /// Class id in `0..Benchmark::num_labels`.
    pub label: usize,
    pub client: String,
    pub language: String,
}

/// Whether a client takes part in federated training (seen) or only in evaluation (unseen),
/// as in the paper's seen/unseen client pools; novel clients speak a language that no seen
/// client speaks (evaluation only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    Seen,
    Unseen,
    Novel,
}

impl Pool {
    /// The lowercase name used in client ids and JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Seen => "seen",
            Pool::Unseen => "unseen",
            Pool::Novel => "novel",
        }
    }
}

/// One client's local data: one language, a train split and a held-out test split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientData {
    pub id: String,
    pub language: String,
    pub pool: Pool,
    pub train: Vec<Example>,
    pub test: Vec<Example>,
}

impl ClientData {
    /// Train and test examples together.
    pub fn examples(&self) -> impl Iterator<Item = &Example> {
        self.train.iter().chain(&self.test)
    }
}

/// A classification benchmark split into clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Benchmark {
    pub name: String,
    pub num_labels: usize,
    /// Human-readable name of each class id (`label_names.len() == num_labels`).
    pub label_names: Vec<String>,
    pub clients: Vec<ClientData>,
}

impl Benchmark {
    /// The client with this id, if any.
    pub fn client(&self, id: &str) -> Option<&ClientData> {
        self.clients.iter().find(|c| c.id == id)
    }

    /// The clients of one pool, in benchmark order.
    pub fn pool(&self, pool: Pool) -> Vec<&ClientData> {
        self.clients.iter().filter(|c| c.pool == pool).collect()
    }

    /// The distinct languages, in order of first appearance.
    pub fn languages(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.clients {
            if !out.contains(&c.language) {
                out.push(c.language.clone());
            }
        }
        out
    }

    /// Number of examples over all clients and both splits.
    pub fn num_examples(&self) -> usize {
        self.clients
            .iter()
            .map(|c| c.train.len() + c.test.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, language: &str, pool: Pool) -> ClientData {
        let ex = Example {
            text: "x".into(),
            label: 0,
            client: id.into(),
            language: language.into(),
        };
        ClientData {
            id: id.into(),
            language: language.into(),
            pool,
            train: vec![ex.clone(), ex.clone()],
            test: vec![ex],
        }
    }

    #[test]
    fn helpers_find_clients_pools_and_languages() {
        let b = Benchmark {
            name: "t".into(),
            num_labels: 1,
            label_names: vec!["a".into()],
            clients: vec![
                client("s-th-0", "th", Pool::Seen),
                client("s-en-0", "en", Pool::Seen),
                client("u-th-0", "th", Pool::Unseen),
            ],
        };
        assert_eq!(b.client("s-en-0").map(|c| c.language.as_str()), Some("en"));
        assert!(b.client("nope").is_none());
        assert_eq!(b.pool(Pool::Unseen).len(), 1);
        assert_eq!(b.languages(), vec!["th".to_string(), "en".to_string()]);
        assert_eq!(b.num_examples(), 9);
        assert_eq!(
            serde_json::to_string(&Pool::Unseen).ok().as_deref(),
            Some("\"unseen\"")
        );
    }
}
