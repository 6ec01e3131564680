-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 11: each job row names the SLURM cluster whose slurmctld priced
-- it, so clusters can share one ledger. Applied by `asbb-admin migrate`, never by the
-- plugins. No balance, amount or key of an existing entry changes.

-- ClusterName from slurm.conf. A row written before schema 11 is named here after its
-- runs; `migrate` names the rest (jobs that never ran) after the ClusterName of the
-- slurm.conf it finds, unless the runs show several clusters. A row left unnamed is
-- taken by every cluster's reconcile as its own (a ledger only one cluster has used). Not indexed: only `reconcile` and the integration API's lookups by
-- SLURM job id filter on it, never the submit path.
ALTER TABLE jobs ADD COLUMN cluster TEXT;
-- A job that ran is its runs' cluster's (a run key starts with it).
UPDATE jobs SET cluster = (SELECT r.cluster FROM runs r WHERE r.token = jobs.token ORDER BY r.run_key LIMIT 1)
WHERE cluster IS NULL;
