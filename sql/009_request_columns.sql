-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 9: a job's request is kept in columns, not as JSON, and a run's
-- release leaves the key index as its charge did. Applied by `asbb-admin migrate`,
-- never by the plugins. No balance, amount or key of an existing entry changes.

-- What the request adds to the job's row beside the columns it already has (user,
-- uid, account, partition, array size, job id and name). A submission no longer
-- writes the request as JSON: the row is about half as long, so the jobs B-tree,
-- appended at its right edge, splits half as often. `gpus` is `type:count` pairs
-- joined by commas (`a100:2`, `:1` for an untyped GPU), NULL when none.
ALTER TABLE jobs ADD COLUMN nodes INTEGER NOT NULL DEFAULT 0 CHECK (nodes >= 0);
ALTER TABLE jobs ADD COLUMN cpus INTEGER NOT NULL DEFAULT 0 CHECK (cpus >= 0);
ALTER TABLE jobs ADD COLUMN mem_mb INTEGER NOT NULL DEFAULT 0 CHECK (mem_mb >= 0);
ALTER TABLE jobs ADD COLUMN gpus TEXT;
-- 0 where an older row's request did not say (asbb always wrote it).
ALTER TABLE jobs ADD COLUMN time_limit_min INTEGER NOT NULL DEFAULT 0 CHECK (time_limit_min >= 0);
ALTER TABLE jobs ADD COLUMN qos TEXT;
UPDATE jobs SET
    nodes = coalesce(json_extract(request_json, '$.resources.nodes'), 0),
    cpus = coalesce(json_extract(request_json, '$.resources.cpus'), 0),
    mem_mb = coalesce(json_extract(request_json, '$.resources.mem_mb'), 0),
    gpus = (SELECT group_concat(g.key || ':' || g.value, ',')
            FROM (SELECT key, value FROM json_each(request_json, '$.resources.gpus') ORDER BY key) g),
    time_limit_min = coalesce(json_extract(request_json, '$.time_limit_min'), 0),
    qos = json_extract(request_json, '$.qos')
WHERE json_valid(request_json);
ALTER TABLE jobs DROP COLUMN request_json;

-- A run's release, `release-run:<run_key>`, is written in the transaction that writes
-- the run's row (keyed by its run key), as the run's charge is: the run's row keeps
-- both unique, so neither enters the key index. Releases written before this schema
-- (`release:<run_key>`) stay in it.
DROP INDEX journal_key;
CREATE UNIQUE INDEX journal_key ON journal(txn_key, part)
    WHERE substr(txn_key, 1, 5) <> 'hold:' AND substr(txn_key, 1, 7) <> 'charge:'
      AND substr(txn_key, 1, 12) <> 'release-run:';
