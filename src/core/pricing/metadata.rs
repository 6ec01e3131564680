// SPDX-License-Identifier: GPL-2.0-or-later
//! Job metadata: what a job is for, told by the user or a sister tool.
//!
//! Sources, highest precedence first:
//! 1. `--comment` tokens: one word `asbb:KEY=VALUE[,KEY=VALUE...]` anywhere in the
//!    comment, e.g. `--comment "asbb:grant=NSF-12345,domain=climate,max_cost=120"`.
//! 2. The job's environment as sbatch exports it: `ASBB_GRANT`, `ASBB_PROJECT`,
//!    `ASBB_DOMAIN`, `ASBB_MPI_PROFILE`, `ASBB_MAX_COST`, `ASBB_HINT_<KEY>`.
//! 3. `--wckey` as the project code.
//!
//! Keys: `grant`, `project`, `domain`, `mpi` (or the long names `grant_number`,
//! `project_code`, `research_domain`, `mpi_profile`), `max_cost` (dollars), `hint.<key>`.
//! The integration API takes the same as a `job_metadata` object ([`MetadataFields`]).
//! Values: 1-64 characters of letters, digits and `_ - . : /`; `max_cost` is an
//! amount like `120` or `99.50`. Anything else is refused, naming the bad token.

use crate::core::money::Money;
use crate::core::text::{METADATA_KEY, METADATA_VALUE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a job carries besides its resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMetadata {
    pub research_domain: Option<String>,
    pub mpi_profile: Option<String>,
    pub performance_hints: BTreeMap<String, String>,
    /// `max_cost` and any other numeric constraints, in dollars.
    pub cost_constraints: BTreeMap<String, Money>,
    pub grant_number: Option<String>,
    pub project_code: Option<String>,
}

impl JobMetadata {
    pub fn max_cost(&self) -> Option<Money> {
        self.cost_constraints.get("max_cost").copied()
    }

    pub fn is_empty(&self) -> bool {
        *self == JobMetadata::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("asbb: bad job metadata '{token}' in {source_name}: {reason}")]
pub struct MetadataError {
    pub token: String,
    pub source_name: &'static str,
    pub reason: String,
}

const MAX_HINTS: usize = 32;

/// One `key=value` from any source, applied unless a higher source already set it.
fn apply(
    meta: &mut JobMetadata,
    key: &str,
    value: &str,
    source: &'static str,
    shown: &str,
) -> Result<(), MetadataError> {
    let bad = |reason: &str| MetadataError {
        token: crate::core::text::clean_text(shown),
        source_name: source,
        reason: reason.to_string(),
    };
    let key = key.trim();
    let value = value.trim();
    if key == "max_cost" {
        let amount = Money::parse(value).map_err(|e| bad(&e.to_string()))?;
        meta.cost_constraints.entry("max_cost".into()).or_insert(amount);
        return Ok(());
    }
    if !METADATA_VALUE.accepts(value) {
        return Err(bad("values are 1-64 letters, digits or _ - . : /"));
    }
    // The short names, and the long ones the sister tools use.
    let slot = match key {
        "grant" | "grant_number" => &mut meta.grant_number,
        "project" | "project_code" => &mut meta.project_code,
        "domain" | "research_domain" => &mut meta.research_domain,
        "mpi" | "mpi_profile" => &mut meta.mpi_profile,
        other => {
            let hint = other
                .strip_prefix("hint.")
                .ok_or_else(|| bad("unknown key; use grant, project, domain, mpi, max_cost or hint.<key>"))?;
            if !METADATA_KEY.accepts(hint) {
                return Err(bad("hint keys are 1-32 letters, digits or _"));
            }
            if meta.performance_hints.len() >= MAX_HINTS && !meta.performance_hints.contains_key(hint) {
                return Err(bad("too many hints (at most 32)"));
            }
            meta.performance_hints.entry(hint.to_ascii_lowercase()).or_insert_with(|| value.to_string());
            return Ok(());
        }
    };
    if slot.is_none() {
        *slot = Some(value.to_string());
    }
    Ok(())
}

/// The roadmap's `job_metadata` object, as the integration API receives it: the same
/// rules as `--comment` (`source_name` says where, e.g. "job_metadata"). Hints may be
/// strings, numbers or booleans; cost constraints are amounts, of which `max_cost`
/// is enforced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataFields {
    #[serde(default)]
    pub grant_number: Option<String>,
    #[serde(default)]
    pub project_code: Option<String>,
    #[serde(default)]
    pub research_domain: Option<String>,
    #[serde(default)]
    pub mpi_profile: Option<String>,
    #[serde(default)]
    pub performance_hints: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub cost_constraints: BTreeMap<String, serde_json::Value>,
}

impl MetadataFields {
    pub fn into_metadata(self, source: &'static str) -> Result<JobMetadata, MetadataError> {
        let mut meta = JobMetadata::default();
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let named = [
            ("grant_number", self.grant_number),
            ("project_code", self.project_code),
            ("research_domain", self.research_domain),
            ("mpi_profile", self.mpi_profile),
        ];
        for (key, value) in named {
            if let Some(v) = value {
                apply(&mut meta, key, &v, source, &format!("{key}={v}"))?;
            }
        }
        for (key, v) in &self.performance_hints {
            let v = text(v);
            apply(&mut meta, &format!("hint.{key}"), &v, source, &format!("performance_hints.{key}={v}"))?;
        }
        for (key, v) in &self.cost_constraints {
            let v = text(v);
            let shown = format!("cost_constraints.{key}={v}");
            let bad = |reason: String| MetadataError {
                token: crate::core::text::clean_text(&shown),
                source_name: source,
                reason,
            };
            if !METADATA_KEY.accepts(key) {
                return Err(bad("constraint names are 1-32 letters, digits or _".into()));
            }
            let amount = Money::parse(v.trim()).map_err(|e| bad(e.to_string()))?;
            meta.cost_constraints.insert(key.clone(), amount);
        }
        Ok(meta)
    }
}

/// Reads metadata from a job's comment, environment and wckey.
pub fn parse(comment: Option<&str>, environment: &[String], wckey: Option<&str>) -> Result<JobMetadata, MetadataError> {
    let mut meta = JobMetadata::default();
    if let Some(comment) = comment {
        for word in comment.split_whitespace() {
            // "asbb:" alone is prose (e.g. a hold reason asbb appended), not a token.
            let Some(body) = word.strip_prefix("asbb:").filter(|b| !b.is_empty()) else { continue };
            for pair in body.split(',') {
                let (k, v) = pair.split_once('=').ok_or_else(|| MetadataError {
                    token: crate::core::text::clean_text(pair),
                    source_name: "--comment",
                    reason: "expected KEY=VALUE".into(),
                })?;
                apply(&mut meta, k, v, "--comment", pair)?;
            }
        }
    }
    for entry in environment {
        let Some((name, value)) = entry.split_once('=') else { continue };
        let key = match name {
            "ASBB_GRANT" => "grant".to_string(),
            "ASBB_PROJECT" => "project".to_string(),
            "ASBB_DOMAIN" => "domain".to_string(),
            "ASBB_MPI_PROFILE" => "mpi".to_string(),
            "ASBB_MAX_COST" => "max_cost".to_string(),
            n => match n.strip_prefix("ASBB_HINT_") {
                Some(h) => format!("hint.{}", h.to_ascii_lowercase()),
                None => continue,
            },
        };
        apply(&mut meta, &key, value, "the environment", entry)?;
    }
    if let Some(w) = wckey.map(str::trim).filter(|w| !w.is_empty()) {
        // A leading '*' marks a default wckey in SLURM.
        let w = w.trim_start_matches('*');
        apply(&mut meta, "project", w, "--wckey", w)?;
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_tokens_win_over_environment_and_wckey() {
        let env = vec![
            "ASBB_GRANT=DOE-1".to_string(),
            "ASBB_DOMAIN=bio".into(),
            "ASBB_HINT_IO=heavy".into(),
            "PATH=/bin".into(),
        ];
        let m = parse(Some("run 3 asbb:grant=NSF-12345,domain=climate,max_cost=120"), &env, Some("proj7")).unwrap();
        assert_eq!(m.grant_number.as_deref(), Some("NSF-12345"));
        assert_eq!(m.research_domain.as_deref(), Some("climate"));
        assert_eq!(m.max_cost(), Some(Money::from_dollars(120).unwrap()));
        assert_eq!(m.performance_hints.get("io").map(String::as_str), Some("heavy"));
        assert_eq!(m.project_code.as_deref(), Some("proj7"));
    }

    #[test]
    fn bad_tokens_are_named() {
        let e = parse(Some("asbb:grant=NSF-1,colour=blue"), &[], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "asbb: bad job metadata 'colour=blue' in --comment: unknown key; use grant, project, domain, mpi, max_cost or hint.<key>"
        );
        let e = parse(None, &["ASBB_MAX_COST=lots".to_string()], None).unwrap_err();
        assert_eq!(e.to_string(), "asbb: bad job metadata 'ASBB_MAX_COST=lots' in the environment: amount 'lots' is not a decimal number like 1250.50");
        let e = parse(Some("asbb:grant"), &[], None).unwrap_err();
        assert_eq!(e.to_string(), "asbb: bad job metadata 'grant' in --comment: expected KEY=VALUE");
        let e = parse(Some("asbb:domain=a;rm"), &[], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "asbb: bad job metadata 'domain=a;rm' in --comment: values are 1-64 letters, digits or _ - . : /"
        );
    }

    #[test]
    fn nothing_given_is_empty() {
        assert!(parse(Some("just a note"), &["HOME=/root".into()], None).unwrap().is_empty());
    }
}
