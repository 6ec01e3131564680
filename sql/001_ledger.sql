-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 1: budget accounts, allocations, the append-only journal,
-- jobs and their runs, and the audit log. Money columns are integer micro-dollars
-- (`*_micros`); times are unix seconds (UTC).

CREATE TABLE accounts (
    id                  INTEGER PRIMARY KEY,
    name                TEXT    NOT NULL UNIQUE,           -- the SLURM account
    status              TEXT    NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'frozen', 'closed')),
    credit_limit_micros INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit_micros >= 0),
    description         TEXT,
    created_at          INTEGER NOT NULL,
    -- Cached totals, re-derivable from the journal (`asbb-admin verify` checks them).
    held_micros         INTEGER NOT NULL DEFAULT 0,        -- open holds
    overdraft_micros    INTEGER NOT NULL DEFAULT 0         -- charges no allocation covered
);

-- Money an account may spend between valid_from (inclusive) and valid_until (exclusive).
CREATE TABLE allocations (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES accounts(id),
    amount_micros   INTEGER NOT NULL CHECK (amount_micros > 0),
    valid_from      INTEGER NOT NULL,
    valid_until     INTEGER NOT NULL CHECK (valid_until > valid_from),
    memo            TEXT,
    created_at      INTEGER NOT NULL,
    debited_micros  INTEGER NOT NULL DEFAULT 0             -- cached: charges net of refunds
);
CREATE INDEX allocations_account ON allocations(account_id, valid_until);

-- The journal. Amounts are positive except adjustments, which are signed
-- (positive = more cost). Entries are never changed or deleted; corrections are new
-- entries. One transaction may have several parts (a charge split over allocations),
-- all sharing its idempotency key.
CREATE TABLE journal (
    id              INTEGER PRIMARY KEY,
    txn_key         TEXT    NOT NULL,
    part            INTEGER NOT NULL DEFAULT 0,
    kind            TEXT    NOT NULL
                    CHECK (kind IN ('deposit', 'hold', 'release', 'charge', 'refund', 'adjustment', 'expiry')),
    account_id      INTEGER NOT NULL REFERENCES accounts(id),
    allocation_id   INTEGER REFERENCES allocations(id),
    amount_micros   INTEGER NOT NULL,
    token           TEXT,
    job_id          INTEGER,
    at              INTEGER NOT NULL,
    actor           TEXT,
    memo            TEXT,
    UNIQUE (txn_key, part),
    CHECK (kind = 'adjustment' OR amount_micros > 0)
);
CREATE INDEX journal_account ON journal(account_id, at);
CREATE INDEX journal_token ON journal(token) WHERE token IS NOT NULL;

CREATE TRIGGER journal_immutable_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END;
CREATE TRIGGER journal_immutable_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END;

-- One row per submission that asbb priced. The token is written into the job's
-- admin_comment (asbb:hold=<token>) and links every completion back here.
CREATE TABLE jobs (
    token           TEXT    PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES accounts(id),
    user_name       TEXT    NOT NULL,
    uid             INTEGER NOT NULL,
    partition       TEXT    NOT NULL,
    job_id          INTEGER,                                -- first SLURM job id seen
    job_name        TEXT,
    request_json    TEXT    NOT NULL,
    estimate_micros INTEGER NOT NULL CHECK (estimate_micros >= 0),
    tasks_total     INTEGER NOT NULL CHECK (tasks_total >= 1),
    tasks_done      INTEGER NOT NULL DEFAULT 0,
    -- Cached, re-derivable from the journal entries carrying this token.
    held_micros     INTEGER NOT NULL DEFAULT 0 CHECK (held_micros >= 0),
    hold_placed_micros INTEGER NOT NULL DEFAULT 0,          -- hold when funds were first held
    charged_micros  INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL
                    CHECK (state IN ('held', 'awaiting_approval', 'awaiting_funds', 'settled', 'released', 'denied')),
    reason          TEXT,
    submitted_at    INTEGER NOT NULL,
    settled_at      INTEGER
);
CREATE INDEX jobs_job_id ON jobs(job_id);
CREATE INDEX jobs_state ON jobs(state, submitted_at);

-- One row per ended run (a requeued job has several). run_key makes reconcile idempotent.
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    run_key         TEXT    NOT NULL UNIQUE,                -- cluster:job_id:start_time
    token           TEXT    REFERENCES jobs(token),
    account_id      INTEGER NOT NULL REFERENCES accounts(id),
    cluster         TEXT    NOT NULL,
    job_id          INTEGER NOT NULL,
    user_name       TEXT    NOT NULL,
    partition       TEXT    NOT NULL,
    end_state       TEXT    NOT NULL,
    start_time      INTEGER NOT NULL,
    end_time        INTEGER NOT NULL,
    elapsed_s       INTEGER NOT NULL,
    alloc_json      TEXT,
    cost_micros     INTEGER NOT NULL CHECK (cost_micros >= 0),
    estimate_share_micros INTEGER NOT NULL DEFAULT 0,
    reconciled_at   INTEGER NOT NULL
);
CREATE INDEX runs_job ON runs(cluster, job_id);
CREATE INDEX runs_token ON runs(token);

-- Who did what with asbb-admin.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    command TEXT    NOT NULL,
    detail  TEXT
);
