-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 3: grants. A grant funds a budget account through one
-- allocation per budget period (allocations.grant_id); its charges are the journal
-- entries posted to those allocations. Money is integer micro-dollars, rates are
-- parts per million (0.30 = 300000), times are unix seconds (UTC) with exclusive ends
-- like allocations (the last day inclusive is stored as the next midnight).

CREATE TABLE grant_accounts (
    id                      INTEGER PRIMARY KEY,
    grant_number            TEXT    NOT NULL UNIQUE,
    funding_agency          TEXT    NOT NULL,
    principal_investigator  TEXT    NOT NULL,
    co_pis                  TEXT    NOT NULL DEFAULT '[]',  -- JSON array of names
    program                 TEXT,
    federal_award_id        TEXT,
    grant_start_date        INTEGER NOT NULL,
    grant_end_date          INTEGER NOT NULL CHECK (grant_end_date > grant_start_date),
    total_award_micros      INTEGER NOT NULL CHECK (total_award_micros > 0),
    indirect_rate_ppm       INTEGER NOT NULL CHECK (indirect_rate_ppm >= 0 AND indirect_rate_ppm < 1000000),
    budget_account_id       INTEGER REFERENCES accounts(id),  -- NULL: a record that funds no account
    status                  TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    closed_at               INTEGER,
    created_at              INTEGER NOT NULL
);
CREATE INDEX grant_accounts_account ON grant_accounts(budget_account_id);

-- Budget periods: the whole grant, each grant year, or N equal parts. amount_micros is
-- the period's share of the award (direct + indirect); its allocation holds the direct part.
CREATE TABLE grant_periods (
    id              INTEGER PRIMARY KEY,
    grant_id        INTEGER NOT NULL REFERENCES grant_accounts(id),
    period_no       INTEGER NOT NULL CHECK (period_no >= 1),
    start_date      INTEGER NOT NULL,
    end_date        INTEGER NOT NULL CHECK (end_date > start_date),
    amount_micros   INTEGER NOT NULL CHECK (amount_micros > 0),
    allocation_id   INTEGER REFERENCES allocations(id),
    UNIQUE (grant_id, period_no)
);

ALTER TABLE allocations ADD COLUMN grant_id INTEGER REFERENCES grant_accounts(id);
CREATE INDEX allocations_grant ON allocations(grant_id) WHERE grant_id IS NOT NULL;

-- Grant reports read the journal by allocation.
CREATE INDEX journal_allocation ON journal(allocation_id, at) WHERE allocation_id IS NOT NULL;
