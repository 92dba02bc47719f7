-- FedP2EFT server schema, PostgreSQL flavour: the SQLite schema (../sqlite/0001_init.sql) with
-- BIGINT for every integer (times are Unix milliseconds, seeds two's-complement i64, so both
-- stores read and write the same values) and BYTEA for blobs. Tables land in the first schema
-- of the connection's search_path, so one database can hold several servers' schemas.

CREATE TABLE runs (
    id            TEXT   PRIMARY KEY,
    -- The run's configuration as the wire crate's JSON; the store treats it as opaque.
    config        TEXT   NOT NULL,
    -- Seeds client sampling: round k's selection is a function of (seed, k, seen pool).
    seed          BIGINT NOT NULL,
    state         TEXT   NOT NULL CHECK (state IN ('running', 'finished')),
    -- k: the round that is open (or closing, or next to open); R once finished.
    current_round BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE clients (
    run_id      TEXT   NOT NULL REFERENCES runs (id),
    id          TEXT   NOT NULL,
    pool        TEXT   NOT NULL CHECK (pool IN ('seen', 'unseen')),
    -- SHA-256 of the client's bearer token; the token itself is never stored.
    token_hash  BYTEA  NOT NULL,
    enrolled_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, id)
);

-- phi_k exactly as served; version 0 is the initial PSG, version R the final one.
CREATE TABLE psgs (
    run_id     TEXT   NOT NULL REFERENCES runs (id),
    version    BIGINT NOT NULL,
    digest     TEXT   NOT NULL,
    bytes      BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, version)
);

CREATE TABLE rounds (
    run_id        TEXT   NOT NULL REFERENCES runs (id),
    round         BIGINT NOT NULL,
    -- open -> closing (no more uploads; aggregating) -> aggregated | failed
    state         TEXT   NOT NULL CHECK (state IN ('open', 'closing', 'aggregated', 'failed')),
    opened_at     BIGINT NOT NULL,
    deadline_at   BIGINT NOT NULL,
    closing_at    BIGINT,
    closed_at     BIGINT,
    -- 'all_reported' | 'deadline'
    close_reason  TEXT,
    num_updates   BIGINT,
    total_samples BIGINT,
    PRIMARY KEY (run_id, round)
);

-- Every server process lists the open and closing rounds at each deadline check.
CREATE INDEX rounds_unfinished ON rounds (state) WHERE state IN ('open', 'closing');

CREATE TABLE selections (
    run_id    TEXT   NOT NULL,
    round     BIGINT NOT NULL,
    client_id TEXT   NOT NULL,
    PRIMARY KEY (run_id, round, client_id),
    FOREIGN KEY (run_id, round) REFERENCES rounds (run_id, round),
    FOREIGN KEY (run_id, client_id) REFERENCES clients (run_id, id)
);

CREATE TABLE updates (
    run_id      TEXT   NOT NULL,
    round       BIGINT NOT NULL,
    client_id   TEXT   NOT NULL,
    num_samples BIGINT NOT NULL,
    digest      TEXT   NOT NULL,
    bytes       BYTEA  NOT NULL,
    received_at BIGINT NOT NULL,
    -- One update per selected client per round: the primary key is the idempotency key.
    PRIMARY KEY (run_id, round, client_id),
    FOREIGN KEY (run_id, round, client_id) REFERENCES selections (run_id, round, client_id)
);

-- Payloads are f32 tensors, which barely compress: keep them out of line but uncompressed, so
-- no upload or download pays for a pglz pass.
ALTER TABLE updates ALTER COLUMN bytes SET STORAGE EXTERNAL;
ALTER TABLE psgs ALTER COLUMN bytes SET STORAGE EXTERNAL;
