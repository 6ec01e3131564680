-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 6: money goes where the job says. A job that names a grant
-- (or runs in an account with a default grant) holds and is charged only against
-- that grant's allocations; the grant's open holds are kept beside it, as the
-- account's are, so a decision reads one row. Applied by `asbb-admin migrate`.

-- Cached, re-derivable from the jobs that name the grant (`asbb-admin verify`).
ALTER TABLE grant_accounts ADD COLUMN held_micros INTEGER NOT NULL DEFAULT 0;

-- Jobs of older ledgers that named a grant are settled against it from now on: their
-- open holds count against it.
UPDATE grant_accounts SET held_micros = coalesce(
    (SELECT sum(j.held_micros) FROM jobs j WHERE j.grant_number = grant_accounts.grant_number), 0);
