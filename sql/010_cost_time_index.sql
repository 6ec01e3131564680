-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 10: only cost entries (charge, refund, adjustment) are indexed
-- by time. Applied by `asbb-admin migrate`, never by the plugins. No entry changes.

-- Every reader of the journal by time wants cost entries: chargeback (`report usage`),
-- an account's burn rate in grant reports and alerts. A hold, a release, a deposit or
-- an expiry entered the time index too, and a submission's hold was a whole page of
-- it (1.1 of the 4.6 pages a submission wrote). An account's history
-- (`asbb-admin transactions`) now reads the journal straight through.
DROP INDEX journal_at;
CREATE INDEX journal_cost_at ON journal(at) WHERE kind IN ('charge', 'refund', 'adjustment');
