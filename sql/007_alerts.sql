-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 7: alerts that reach people. A grant may carry its PI's mail
-- address; every alert raised is kept with each of its deliveries, so a crossing is
-- sent once and a failed delivery is retried. Applied by `asbb-admin migrate`.

ALTER TABLE grant_accounts ADD COLUMN pi_email TEXT;

-- One row per crossing: a condition (alert_key) that became true. While it holds, the
-- row stays open (cleared_at NULL) and nothing new is raised for it; once it no longer
-- holds the row is cleared, and a later crossing raises a new one.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    alert_key   TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('spent', 'exhaustion', 'approval', 'hold_age')),
    subject     TEXT    NOT NULL,                       -- 'grant NSF-1', 'account chem', 'job 42'
    title       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    raised_at   INTEGER NOT NULL,
    cleared_at  INTEGER
);
CREATE UNIQUE INDEX alerts_open ON alerts(alert_key) WHERE cleared_at IS NULL;

-- Where each alert goes. 'pending' is tried by every run (at most once per retry
-- interval, claimed by setting last_attempt_at) until it is 'sent' or, after the last
-- attempt, 'gave_up'. 'superseded': a higher threshold crossed in the same run says it.
CREATE TABLE alert_deliveries (
    alert_id        INTEGER NOT NULL REFERENCES alerts(id),
    channel         TEXT    NOT NULL CHECK (channel IN ('webhook', 'mail')),
    recipients      TEXT    NOT NULL DEFAULT '',        -- mail: comma-separated addresses
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'gave_up', 'superseded')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at INTEGER,
    last_error      TEXT,
    sent_at         INTEGER,
    PRIMARY KEY (alert_id, channel)
);
CREATE INDEX alert_deliveries_pending ON alert_deliveries(state) WHERE state = 'pending';
