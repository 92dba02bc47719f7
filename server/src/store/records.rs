//! Plain data that goes in and out of a `Store`. Enumerations are stored as short lowercase
//! strings (readable in `sqlite3`, portable to PostgreSQL).
use super::StoreError;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Result<Self, StoreError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::Corrupt(format!(
                        concat!(stringify!($name), " `{}`"), other
                    ))),
                }
            }
        }
    };
}

text_enum!(
    /// A run exists with its PSG from creation on, so it is running until its last round closes.
    RunState { Running => "running", Finished => "finished" }
);
text_enum!(
    /// Seen clients train the PSG; unseen ones only download it (method.md §3.4).
    Pool { Seen => "seen", Unseen => "unseen" }
);
text_enum!(
    /// `Open` accepts uploads; `Closing` is frozen while aggregating; the last two are final.
    RoundState { Open => "open", Closing => "closing", Aggregated => "aggregated", Failed => "failed" }
);
text_enum!(
    CloseReason { AllReported => "all_reported", Deadline => "deadline" }
);

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    /// The run configuration as JSON (a wire type); opaque to the store.
    pub config: String,
    pub seed: u64,
    pub state: RunState,
    /// k: the open (or closing, or next to open) round; R once finished.
    pub current_round: u32,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    pub run_id: String,
    pub id: String,
    pub pool: Pool,
    pub token_hash: [u8; 32],
    pub enrolled_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PsgRecord {
    pub version: u32,
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// phi_version, about to be stored: the payload as it will be served.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPsg {
    pub version: u32,
    pub digest: String,
    pub bytes: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewRound {
    pub round: u32,
    pub opened_at: i64,
    pub deadline_at: i64,
    /// Client ids selected to train in this round.
    pub selected: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    pub run_id: String,
    pub round: u32,
    pub state: RoundState,
    pub opened_at: i64,
    pub deadline_at: i64,
    pub closing_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub close_reason: Option<CloseReason>,
    /// Clients selected for the round.
    pub selected: u32,
    /// Updates stored for the round so far.
    pub reported: u32,
    /// Sum of the stored updates' sample counts.
    pub total_samples: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewUpdate {
    pub run_id: String,
    pub round: u32,
    pub client_id: String,
    pub num_samples: u64,
    pub digest: String,
    pub bytes: Vec<u8>,
    pub received_at: i64,
}

/// A stored update without its bytes (fetched one at a time: a round's updates together may
/// not fit in memory).
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateSummary {
    pub client_id: String,
    pub num_samples: u64,
    pub digest: String,
}

/// What `Store::put_update` did, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Newly stored.
    Stored,
    /// The same bytes were stored before: nothing changed.
    Duplicate,
    /// The client already has a different update in this round: nothing changed.
    Conflict,
    NoSuchRound,
    /// The round exists but is no longer open.
    RoundNotOpen,
    NotSelected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    Aggregated,
    /// Too few updates by the deadline: phi carries over unchanged.
    Failed,
}

impl RoundOutcome {
    pub fn state(self) -> RoundState {
        match self {
            RoundOutcome::Aggregated => RoundState::Aggregated,
            RoundOutcome::Failed => RoundState::Failed,
        }
    }
}

/// Everything `Store::finish_round` writes in its one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundClose {
    pub run_id: String,
    pub round: u32,
    pub outcome: RoundOutcome,
    pub closed_at: i64,
    /// phi_{round+1}.
    pub next_psg: NewPsg,
    /// Round round+1, or None when `round` was the run's last (the run then finishes).
    pub next_round: Option<NewRound>,
}
