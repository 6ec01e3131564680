// SPDX-License-Identifier: GPL-2.0-or-later
//! The burst launcher's reconciliation files, imported from a directory.

use super::*;

/// `job-<id>-asbb-reconciliation.json`, as the burst launcher writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconciliationFile {
    job_id: Box<RawValue>,
    account: String,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    partition: String,
    actual_cost: Box<RawValue>,
    #[serde(default)]
    compute_cost: Option<Box<RawValue>>,
    #[serde(default)]
    storage_cost: Option<Box<RawValue>>,
    #[serde(default)]
    network_cost: Option<Box<RawValue>>,
    #[serde(default)]
    spot_savings: Option<Box<RawValue>>,
    #[serde(default)]
    instance_types: Vec<String>,
    #[serde(default)]
    duration_hours: Option<Box<RawValue>>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    export_time: Option<String>,
    #[serde(default)]
    plugin_version: Option<String>,
}

/// The job id in a reconciliation file's name, or `None` when it is not one.
pub fn reconciliation_file_job_id(name: &str) -> Option<u32> {
    let id = name.strip_prefix("job-")?.strip_suffix("-asbb-reconciliation.json")?;
    if id.is_empty() || id.len() > 10 || !id.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// What importing one file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FileOutcome {
    Applied(CostOutcome),
    /// Applied before: nothing changed.
    Skipped(CostOutcome),
    Refused {
        reason: String,
    },
}

pub use crate::core::config::IMPORT_SOURCE;

/// Parses one reconciliation file into a cost update.
pub fn parse_reconciliation_file(name: &str, text: &str) -> Result<CostUpdate, String> {
    let name_id = reconciliation_file_job_id(name)
        .ok_or_else(|| "the file name is not job-<id>-asbb-reconciliation.json".to_string())?;
    let f: ReconciliationFile = serde_json::from_str(text).map_err(|e| format!("not a reconciliation file: {e}"))?;
    let job_id = count_from_raw(&f.job_id, "job_id", u32::MAX as u64).map_err(|e| e.to_string())? as u32;
    if job_id != name_id {
        return Err(format!("job_id {job_id} does not match the file name's job {name_id}"));
    }
    let money = |raw: &RawValue, field: &str| money_from_raw(raw, field).map_err(|e| e.to_string());
    let opt = |raw: &Option<Box<RawValue>>, field: &str| raw.as_deref().map(|r| money(r, field)).transpose();
    let duration_s = match &f.duration_hours {
        // Hours with up to six decimals, read exactly, to whole seconds (rounded half up).
        Some(h) => Some((money(h, "duration_hours")?.micros() as i128 * 3600 + 500_000) / 1_000_000),
        None => None,
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("user_id".into(), f.user_id.clone().unwrap_or(serde_json::Value::Null));
    metadata.insert("success".into(), f.success.map(serde_json::Value::Bool).unwrap_or(serde_json::Value::Null));
    metadata.insert("export_time".into(), f.export_time.clone().map(serde_json::Value::String).unwrap_or_default());
    metadata
        .insert("plugin_version".into(), f.plugin_version.clone().map(serde_json::Value::String).unwrap_or_default());
    metadata.insert("duration_s".into(), duration_s.map(|d| serde_json::Value::from(d as i64)).unwrap_or_default());
    metadata.insert("file".into(), serde_json::Value::String(name.to_string()));
    Ok(CostUpdate {
        cluster: None,
        job_id,
        source: IMPORT_SOURCE.to_string(),
        actual: money(&f.actual_cost, "actual_cost")?,
        compute: opt(&f.compute_cost, "compute_cost")?,
        storage: opt(&f.storage_cost, "storage_cost")?,
        network: opt(&f.network_cost, "network_cost")?,
        spot_savings: opt(&f.spot_savings, "spot_savings")?,
        instance_types: f.instance_types,
        performance: None,
        metadata: Some(serde_json::Value::Object(metadata)),
        cost_data: None,
        expect_account: Some(f.account),
        expect_partition: Some(f.partition),
    })
}

impl Budget {
    /// Imports one file or every `job-<id>-asbb-reconciliation.json` in a folder (in
    /// name order). Each file is applied, skipped (applied before) or refused with why;
    /// a refused file changes nothing.
    pub fn import_costs(
        &mut self,
        path: &Path,
        actor: &str,
        now: i64,
    ) -> Result<Vec<(PathBuf, FileOutcome)>, IntegrationError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| IntegrationError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let files: Vec<PathBuf> = if meta.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| IntegrationError::Invalid(format!("cannot read {}: {e}", path.display())))?
                .filter_map(|d| d.ok().map(|d| d.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-asbb-reconciliation.json"))
                })
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut out = Vec::with_capacity(files.len());
        for file in files {
            let outcome = match self.import_one(&file, actor, now) {
                Ok(o) if o.applied => FileOutcome::Applied(o),
                Ok(o) => FileOutcome::Skipped(o),
                Err(ImportError::Refused(reason)) => FileOutcome::Refused { reason },
                // The ledger itself failing stops the import: nothing after it is tried.
                Err(ImportError::Ledger(e)) => return Err(e),
            };
            out.push((file, outcome));
        }
        Ok(out)
    }

    fn import_one(&mut self, file: &Path, actor: &str, now: i64) -> Result<CostOutcome, ImportError> {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        // Only a regular file of root, SlurmUser or the caller, never through a symlink,
        // never waiting on a FIFO, never more than the limit.
        let bytes =
            crate::core::safe_fs::read_trusted_file(file, MAX_IMPORT_FILE_BYTES).map_err(ImportError::Refused)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ImportError::Refused("cannot read: stream did not contain valid UTF-8".into()))?;
        let update = parse_reconciliation_file(&name, &text).map_err(ImportError::Refused)?;
        self.apply_cost_update(&update, actor, now).map_err(|e| match e {
            IntegrationError::Budget(b) => ImportError::Ledger(IntegrationError::Budget(b)),
            other => ImportError::Refused(other.to_string()),
        })
    }
}

enum ImportError {
    Refused(String),
    Ledger(IntegrationError),
}
