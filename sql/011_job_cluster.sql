-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 11: each job row names the SLURM cluster whose slurmctld priced
-- it, so clusters can share one ledger. Applied by `asbb-admin migrate`, never by the
-- plugins. No balance, amount or key of an existing entry changes.

-- ClusterName from slurm.conf. NULL on a row written before schema 11: `migrate`
-- fills it in with the ClusterName of the slurm.conf it finds; where it found none,
-- every cluster's reconcile takes such a row as its own (a ledger only one cluster
-- has used). Not indexed: only `reconcile` and the integration API's lookups by
-- SLURM job id filter on it, never the submit path.
ALTER TABLE jobs ADD COLUMN cluster TEXT;
