-- FedP2EFT server schema, SQLite flavour. Times are Unix milliseconds (INTEGER) so the same
-- schema maps 1:1 onto PostgreSQL BIGINT columns; blobs become BYTEA there.

CREATE TABLE runs (
    id            TEXT    PRIMARY KEY,
    -- The run's configuration as the wire crate's JSON; the store treats it as opaque.
    config        TEXT    NOT NULL,
    -- Seeds client sampling: round k's selection is a function of (seed, k, seen pool).
    seed          INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('running', 'finished')),
    -- k: the round that is open (or closing, or next to open); R once finished.
    current_round INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE clients (
    run_id      TEXT    NOT NULL REFERENCES runs (id),
    id          TEXT    NOT NULL,
    pool        TEXT    NOT NULL CHECK (pool IN ('seen', 'unseen')),
    -- SHA-256 of the client's bearer token; the token itself is never stored.
    token_hash  BLOB    NOT NULL,
    enrolled_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, id)
);

-- phi_k, the PSG that round k starts from, exactly as served (a safetensors payload): version 0
-- is the initial PSG, version R the final one of an R-round run. Kept for every round so any
-- round can be audited, evaluated or re-served.
CREATE TABLE psgs (
    run_id     TEXT    NOT NULL REFERENCES runs (id),
    version    INTEGER NOT NULL,
    digest     TEXT    NOT NULL,
    bytes      BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, version)
);

CREATE TABLE rounds (
    run_id        TEXT    NOT NULL REFERENCES runs (id),
    round         INTEGER NOT NULL,
    -- open -> closing (no more uploads; aggregating) -> aggregated | failed
    state         TEXT    NOT NULL CHECK (state IN ('open', 'closing', 'aggregated', 'failed')),
    opened_at     INTEGER NOT NULL,
    deadline_at   INTEGER NOT NULL,
    closing_at    INTEGER,
    closed_at     INTEGER,
    -- 'all_reported' | 'deadline'
    close_reason  TEXT,
    num_updates   INTEGER,
    total_samples INTEGER,
    PRIMARY KEY (run_id, round)
);

CREATE INDEX rounds_by_state ON rounds (state);

CREATE TABLE selections (
    run_id    TEXT    NOT NULL,
    round     INTEGER NOT NULL,
    client_id TEXT    NOT NULL,
    PRIMARY KEY (run_id, round, client_id),
    FOREIGN KEY (run_id, round) REFERENCES rounds (run_id, round),
    FOREIGN KEY (run_id, client_id) REFERENCES clients (run_id, id)
);

CREATE TABLE updates (
    run_id      TEXT    NOT NULL,
    round       INTEGER NOT NULL,
    client_id   TEXT    NOT NULL,
    num_samples INTEGER NOT NULL,
    digest      TEXT    NOT NULL,
    bytes       BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    -- One update per selected client per round: the primary key is the idempotency key.
    PRIMARY KEY (run_id, round, client_id),
    FOREIGN KEY (run_id, round, client_id) REFERENCES selections (run_id, round, client_id)
);
