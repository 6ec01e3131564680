-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 5: fewer index pages written per submission, inside
-- slurmctld. Applied by `asbb-admin migrate`, never by the plugins. Only indexes
-- change: no row, balance or journal entry is touched.

-- A job's SLURM id is unknown when its hold is placed: index it only once known, so
-- a submission writes no entry here.
DROP INDEX jobs_job_id;
CREATE INDEX jobs_job_id ON jobs(job_id) WHERE job_id IS NOT NULL;

-- (account_id, at) put every journal entry on a page of its own account's range: one
-- more cold page read and written per submission. An index on `at` grows at its right
-- edge like the journal itself; an account's entries over a window are found through
-- it and the account filter (statements, forecasts: admin commands, not the hot path).
DROP INDEX journal_account;
CREATE INDEX journal_at ON journal(at);

-- Holds and releases, written on every submission and completion, are never looked up
-- by token (a job's hold changes are keyed `modify:<token>:<n>` and counted through
-- the key index); only the cost entries are, to take a refund back from where they went.
DROP INDEX journal_token;
CREATE INDEX journal_token_cost ON journal(token) WHERE kind IN ('charge', 'refund', 'adjustment');

-- Only open jobs are looked up by state (the safety net's open holds, the waiting
-- list, the metrics): a finished job leaves the index instead of moving within it.
DROP INDEX jobs_state;
CREATE INDEX jobs_open ON jobs(state, submitted_at) WHERE state IN ('held', 'awaiting_approval', 'awaiting_funds');

-- Which accounts a user has run jobs in (what the API lets them read) was an index on
-- every job row, (uid, account_id): a page per submission. A user's first job in an
-- account adds a row here; later ones find it and write nothing.
CREATE TABLE account_job_users (
    uid         INTEGER NOT NULL,
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    PRIMARY KEY (uid, account_id)
) WITHOUT ROWID;
INSERT INTO account_job_users (uid, account_id) SELECT DISTINCT uid, account_id FROM jobs;
DROP INDEX jobs_uid;
