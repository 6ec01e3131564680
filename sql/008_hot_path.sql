-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 8: a submission writes the job's row, its hold entry and its
-- account's cached total, and no index page beside them; a completion writes fewer. Applied by
-- `asbb-admin migrate` (with foreign keys off while tables are rebuilt, checked
-- before commit), never by the plugins. No balance, amount or key changes: rows are
-- copied as they are.

-- The job's row is stored in its token's order (WITHOUT ROWID): tokens of successive
-- jobs sort in order, so a submission appends to one B-tree instead of a row table and
-- its token index. `hold_at` is when the job's first hold was placed (what the
-- hold-age alert reads; it used to find the hold's journal entry by key).
CREATE TABLE jobs_new (
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
    settled_at      INTEGER,
    research_domain TEXT,
    project_code    TEXT,
    grant_number    TEXT,
    metadata_json   TEXT,
    hold_at         INTEGER
) WITHOUT ROWID;
INSERT INTO jobs_new (token, account_id, user_name, uid, partition, job_id, job_name, request_json, estimate_micros,
                      tasks_total, tasks_done, held_micros, hold_placed_micros, charged_micros, state, reason,
                      submitted_at, settled_at, research_domain, project_code, grant_number, metadata_json, hold_at)
SELECT token, account_id, user_name, uid, partition, job_id, job_name, request_json, estimate_micros,
       tasks_total, tasks_done, held_micros, hold_placed_micros, charged_micros, state, reason,
       submitted_at, settled_at, research_domain, project_code, grant_number, metadata_json,
       (SELECT e.at FROM journal e WHERE e.txn_key = 'hold:' || jobs.token AND e.part = 0)
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_grant ON jobs(grant_number) WHERE grant_number IS NOT NULL;
CREATE INDEX jobs_job_id ON jobs(job_id) WHERE job_id IS NOT NULL;
-- Only the jobs waiting for someone (an approval, funds) are indexed by state: an
-- accepted job ('held') enters no index at submit and leaves none at settle. Open
-- holds are found by reading the jobs (the safety net, /metrics: not the hot path).
CREATE INDEX jobs_waiting ON jobs(state, submitted_at) WHERE state IN ('awaiting_approval', 'awaiting_funds');

-- The journal's idempotency keys, less those another row written in the same
-- transaction already makes unique: a job's first hold, `hold:<token>` (the job's row
-- is keyed by its token), and a run's charge, `charge:<run_key>` (the run's row is keyed
-- by its run key). Those entries need not enter the key index. A partial unique index
-- instead of the table's UNIQUE (txn_key, part); look-ups by key repeat its condition.
CREATE TABLE journal_new (
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
    CHECK (kind = 'adjustment' OR amount_micros > 0)
);
INSERT INTO journal_new (id, txn_key, part, kind, account_id, allocation_id, amount_micros, token, job_id, at, actor, memo)
SELECT id, txn_key, part, kind, account_id, allocation_id, amount_micros, token, job_id, at, actor, memo FROM journal;
DROP TABLE journal;
ALTER TABLE journal_new RENAME TO journal;
CREATE UNIQUE INDEX journal_key ON journal(txn_key, part)
    WHERE substr(txn_key, 1, 5) <> 'hold:' AND substr(txn_key, 1, 7) <> 'charge:';
CREATE INDEX journal_allocation ON journal(allocation_id, at) WHERE allocation_id IS NOT NULL;
CREATE INDEX journal_at ON journal(at);
CREATE INDEX journal_token_cost ON journal(token) WHERE kind IN ('charge', 'refund', 'adjustment');
CREATE TRIGGER journal_immutable_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END;
CREATE TRIGGER journal_immutable_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END;

-- A run's learning sample, `run:<run_key>`, is unique because its run is (recorded in
-- the same transaction): only the sister tools' feedback samples need the key index.
CREATE TABLE learning_samples_new (
    id              INTEGER PRIMARY KEY,
    sample_key      TEXT    NOT NULL,                  -- 'run:<run_key>' / 'feedback:<cluster>:<job_id>'
    source          TEXT    NOT NULL CHECK (source IN ('run', 'feedback')),
    account_id      INTEGER NOT NULL REFERENCES accounts(id),
    partition       TEXT    NOT NULL,
    domain          TEXT    NOT NULL DEFAULT '',
    token           TEXT,
    job_id          INTEGER,
    estimate_micros INTEGER NOT NULL CHECK (estimate_micros > 0),
    actual_micros   INTEGER NOT NULL CHECK (actual_micros >= 0),
    estimated_s     INTEGER CHECK (estimated_s >= 0),
    actual_s        INTEGER CHECK (actual_s >= 0),
    at              INTEGER NOT NULL
);
INSERT INTO learning_samples_new (id, sample_key, source, account_id, partition, domain, token, job_id,
                                  estimate_micros, actual_micros, estimated_s, actual_s, at)
SELECT id, sample_key, source, account_id, partition, domain, token, job_id,
       estimate_micros, actual_micros, estimated_s, actual_s, at FROM learning_samples;
DROP TABLE learning_samples;
ALTER TABLE learning_samples_new RENAME TO learning_samples;
CREATE UNIQUE INDEX learning_samples_key ON learning_samples(sample_key) WHERE source <> 'run';
CREATE INDEX learning_samples_group ON learning_samples(account_id, partition, domain, id);
