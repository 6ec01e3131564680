-- SPDX-License-Identifier: GPL-2.0-or-later
-- asbb ledger, schema 2: what a job is for (research domain, project, grant) for
-- reports and for the integration API.
ALTER TABLE jobs ADD COLUMN research_domain TEXT;
ALTER TABLE jobs ADD COLUMN project_code TEXT;
ALTER TABLE jobs ADD COLUMN grant_number TEXT;
ALTER TABLE jobs ADD COLUMN metadata_json TEXT;
CREATE INDEX jobs_grant ON jobs(grant_number) WHERE grant_number IS NOT NULL;
