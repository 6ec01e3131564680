-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 4: the integration API and account members.
-- Money columns are integer micro-dollars (`*_micros`); times are unix seconds (UTC);
-- durations are whole seconds (`*_s`).

-- What actually happened to a job, one sample per ended run (source 'run', written
-- by reconcile in the same transaction) or per feedback record (source 'feedback').
-- Learning sizes future holds from the actual/estimated cost ratios of the most recent
-- samples of the same (account, partition, domain). domain is '' until jobs carry a
-- research domain.
CREATE TABLE learning_samples (
    id              INTEGER PRIMARY KEY,
    sample_key      TEXT    NOT NULL UNIQUE,           -- 'run:<run_key>' / 'feedback:<cluster>:<job_id>'
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
CREATE INDEX learning_samples_group ON learning_samples(account_id, partition, domain, id);

-- Actual costs reported for a job by a sister tool (POST .../cost-update) or imported
-- from the burst launcher's files (`asbb-admin integration import-costs`). One per
-- (cluster, job, source): a replay changes nothing. The money moves as an 'adjustment'
-- in the journal (key `adjust:<cluster>:<job_id>:<source>`, NULL when nothing moved).
CREATE TABLE cost_updates (
    id                    INTEGER PRIMARY KEY,
    cluster               TEXT    NOT NULL,
    job_id                INTEGER NOT NULL,
    source                TEXT    NOT NULL,
    token                 TEXT    NOT NULL REFERENCES jobs(token),
    actual_micros         INTEGER NOT NULL CHECK (actual_micros >= 0),
    charged_before_micros INTEGER NOT NULL,
    delta_micros          INTEGER NOT NULL,
    compute_micros        INTEGER,
    storage_micros        INTEGER,
    network_micros        INTEGER,
    spot_savings_micros   INTEGER,
    instance_types        TEXT,                           -- JSON array
    performance_json      TEXT,
    metadata_json         TEXT,
    txn_key               TEXT,
    received_at           INTEGER NOT NULL,
    actor                 TEXT    NOT NULL,
    UNIQUE (cluster, job_id, source)
);
CREATE INDEX cost_updates_token ON cost_updates(token);

-- Performance feedback from the cost advisor, one per (cluster, job).
CREATE TABLE performance_feedback (
    id                    INTEGER PRIMARY KEY,
    cluster               TEXT    NOT NULL,
    job_id                INTEGER NOT NULL,
    token                 TEXT    NOT NULL REFERENCES jobs(token),
    estimated_cost_micros INTEGER NOT NULL CHECK (estimated_cost_micros >= 0),
    actual_cost_micros    INTEGER NOT NULL CHECK (actual_cost_micros >= 0),
    estimated_duration_s  INTEGER NOT NULL CHECK (estimated_duration_s >= 0),
    actual_duration_s     INTEGER NOT NULL CHECK (actual_duration_s >= 0),
    performance_rating    TEXT,
    optimization_hints    TEXT,                           -- JSON as sent
    received_at           INTEGER NOT NULL,
    actor                 TEXT    NOT NULL,
    UNIQUE (cluster, job_id)
);

-- Who may see an account through the API's unix socket, besides users with jobs in it.
CREATE TABLE account_members (
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    user_name   TEXT    NOT NULL,
    uid         INTEGER,                                  -- when the name resolved to one
    added_at    INTEGER NOT NULL,
    added_by    TEXT    NOT NULL,
    PRIMARY KEY (account_id, user_name)
);
CREATE INDEX account_members_uid ON account_members(uid) WHERE uid IS NOT NULL;
CREATE INDEX jobs_uid ON jobs(uid, account_id);
