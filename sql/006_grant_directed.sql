-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 6: money goes where the job says, and the sister tools' records
-- are kept as sent. A job that names a grant (or runs in an account with a default
-- grant) holds and is charged only against that grant's allocations; the grant's open
-- holds are kept beside it, as the account's are, so a decision reads one row.
-- Applied by `asbb-admin migrate`.

-- Cached, re-derivable from the jobs that name the grant (`asbb-admin verify`).
ALTER TABLE grant_accounts ADD COLUMN held_micros INTEGER NOT NULL DEFAULT 0;

-- Jobs of older ledgers that named a grant are settled against it from now on: their
-- open holds count against it.
UPDATE grant_accounts SET held_micros = coalesce(
    (SELECT sum(j.held_micros) FROM jobs j WHERE j.grant_number = grant_accounts.grant_number), 0);

-- The sister tools' records, as they send them. A cost update keeps its whole
-- `cost_data` object (keys beyond the ones asbb reads included).
ALTER TABLE cost_updates ADD COLUMN cost_data_json TEXT;

-- Performance feedback may be partial: a field not sent is NULL (SQLite cannot drop a
-- NOT NULL in place, so the table is rebuilt with the same rows).
CREATE TABLE performance_feedback_new (
    id                    INTEGER PRIMARY KEY,
    cluster               TEXT    NOT NULL,
    job_id                INTEGER NOT NULL,
    token                 TEXT    NOT NULL REFERENCES jobs(token),
    estimated_cost_micros INTEGER CHECK (estimated_cost_micros >= 0),
    actual_cost_micros    INTEGER CHECK (actual_cost_micros >= 0),
    estimated_duration_s  INTEGER CHECK (estimated_duration_s >= 0),
    actual_duration_s     INTEGER CHECK (actual_duration_s >= 0),
    performance_rating    TEXT,
    optimization_hints    TEXT,                           -- JSON as sent
    received_at           INTEGER NOT NULL,
    actor                 TEXT    NOT NULL,
    UNIQUE (cluster, job_id)
);
INSERT INTO performance_feedback_new SELECT * FROM performance_feedback;
DROP TABLE performance_feedback;
ALTER TABLE performance_feedback_new RENAME TO performance_feedback;
