//! Round locks for a store that only one process uses (SQLite): a set of held (run, round)
//! keys in this process's memory.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::RoundLock;

#[derive(Debug, Default, Clone)]
pub(super) struct LocalLocks {
    held: Arc<Mutex<HashSet<(String, u32)>>>,
}

impl LocalLocks {
    pub(super) fn try_lock(&self, run_id: &str, round: u32) -> Option<Box<dyn RoundLock>> {
        let key = (run_id.to_string(), round);
        // A poisoned set is still a set: a panic elsewhere must not lock every round forever.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(key.clone()) {
            return None;
        }
        Some(Box::new(Held {
            held: Arc::clone(&self.held),
            key,
        }))
    }
}

struct Held {
    held: Arc<Mutex<HashSet<(String, u32)>>>,
    key: (String, u32),
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.key);
    }
}

#[async_trait]
impl RoundLock for Held {
    async fn release(self: Box<Self>) {}
}
