// SPDX-License-Identifier: GPL-2.0-or-later
//! Learning samples: one per run asbb priced (its estimate share against its cost) and
//! one per piece of performance feedback; `core::pricing::learning` turns them into
//! holds.

use super::db::params;
use super::{Ledger, LedgerError, Tx};
use crate::core::money::Money;

/// One sample to record.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub key: &'a str,
    pub source: &'static str,
    pub account_id: i64,
    pub partition: &'a str,
    pub domain: &'a str,
    pub token: Option<&'a str>,
    pub job_id: Option<u32>,
    pub estimate: Money,
    pub actual: Money,
    pub estimated_s: Option<i64>,
    pub actual_s: Option<i64>,
    pub at: i64,
}

/// A sample as the accuracy report reads it (in micros and seconds).
pub struct SampleRow {
    pub account: String,
    pub partition: String,
    pub domain: String,
    pub estimate: i64,
    pub actual: i64,
    pub estimated_s: Option<i64>,
    pub actual_s: Option<i64>,
}

impl Ledger {
    /// Every sample (runs only, unless `include_feedback`) of one account and/or
    /// partition, or all, by group and then in the order they came.
    pub fn samples(
        &self,
        account: Option<&str>,
        partition: Option<&str>,
        include_feedback: bool,
    ) -> Result<Vec<SampleRow>, LedgerError> {
        self.sql(|c| {
            c.prepare(
                "SELECT a.name, s.partition, s.domain, s.estimate_micros, s.actual_micros, s.estimated_s, s.actual_s
                 FROM learning_samples s JOIN accounts a ON a.id = s.account_id
                 WHERE (CAST(?1 AS TEXT) IS NULL OR a.name = ?1) AND (CAST(?2 AS TEXT) IS NULL OR s.partition = ?2) AND (?3 <> 0 OR s.source = 'run')
                 ORDER BY a.name, s.partition, s.domain, s.id",
            )?
            .query_map(params![account, partition, include_feedback], |r| {
                Ok(SampleRow {
                    account: r.get(0)?,
                    partition: r.get(1)?,
                    domain: r.get(2)?,
                    estimate: r.get(3)?,
                    actual: r.get(4)?,
                    estimated_s: r.get(5)?,
                    actual_s: r.get(6)?,
                })
            })?
            .collect()
        })
    }
}

impl Tx<'_> {
    /// (estimate, actual) micros of a group's most recent `limit` samples (runs only,
    /// unless `include_feedback`), newest first.
    pub fn recent_samples(
        &self,
        account_id: i64,
        partition: &str,
        domain: &str,
        include_feedback: bool,
        limit: u32,
    ) -> Result<Vec<(i64, i64)>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT estimate_micros, actual_micros FROM learning_samples
                 WHERE account_id = ?1 AND partition = ?2 AND domain = ?3 AND (?4 <> 0 OR source = 'run')
                 ORDER BY id DESC LIMIT ?5",
            )?
            .query_map(params![account_id, partition, domain, include_feedback, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }

    /// Records a sample once (a replayed key changes nothing); whether it was new. A
    /// sample with no estimate teaches nothing and is skipped.
    pub fn record_sample(&self, s: &Sample<'_>) -> Result<bool, LedgerError> {
        if s.estimate.micros() <= 0 || s.actual.is_negative() {
            return Ok(false);
        }
        let n = self.sql(|c| {
            c.prepare_cached(
                "INSERT INTO learning_samples (sample_key, source, account_id, partition, domain, token, job_id,
                   estimate_micros, actual_micros, estimated_s, actual_s, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                s.key,
                s.source,
                s.account_id,
                s.partition,
                s.domain,
                s.token,
                s.job_id,
                s.estimate.micros(),
                s.actual.micros(),
                s.estimated_s,
                s.actual_s,
                s.at
            ])
        })?;
        Ok(n == 1)
    }
}
