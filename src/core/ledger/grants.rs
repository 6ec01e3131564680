// SPDX-License-Identifier: GPL-2.0-or-later
//! Grant rows: a grant, its budget periods (each with the allocation that holds its
//! direct money, when the grant funds an account), closing it. `core::grants` does the
//! arithmetic (direct and indirect shares, periods) and the reports.

use super::db::{params, OptionalExtension};
use super::{LedgerError, Tx};
use crate::core::money::Money;
use serde::Serialize;

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub id: i64,
    pub number: String,
    pub agency: String,
    pub pi: String,
    pub pi_email: Option<String>,
    pub co_pis: Vec<String>,
    pub program: Option<String>,
    pub federal_award_id: Option<String>,
    pub start: i64,
    pub end: i64,
    pub award: Money,
    pub indirect_rate_ppm: i64,
    pub account: Option<String>,
    pub account_id: Option<i64>,
    pub status: String,
    pub closed_at: Option<i64>,
    pub created_at: i64,
}

/// A new grant's row.
pub(crate) struct NewGrantRow<'a> {
    pub number: &'a str,
    pub agency: &'a str,
    pub pi: &'a str,
    pub co_pis_json: &'a str,
    pub program: Option<&'a str>,
    pub federal_award_id: Option<&'a str>,
    pub start: i64,
    pub end: i64,
    pub award: Money,
    pub indirect_rate_ppm: i64,
    pub account_id: Option<i64>,
    pub pi_email: Option<&'a str>,
    pub created_at: i64,
}

/// A budget period as stored, with its allocation's amount and debit (none for a
/// grant that funds no account).
pub(crate) struct PeriodRow {
    pub period_no: u32,
    pub start: i64,
    pub end: i64,
    pub amount: Money,
    pub allocation_id: Option<i64>,
    pub allocation_amount: Option<Money>,
    pub direct_spent: Money,
    pub indirect_rate_ppm: i64,
}

const GRANT_COLS: &str = "g.id, g.grant_number, g.funding_agency, g.principal_investigator, g.co_pis, g.program,
    g.federal_award_id, g.grant_start_date, g.grant_end_date, g.total_award_micros, g.indirect_rate_ppm,
    a.name, g.budget_account_id, g.status, g.closed_at, g.created_at, g.pi_email";

fn grant_from_row(r: &super::db::Row<'_>) -> super::db::Result<Grant> {
    let co_pis: String = r.get(4)?;
    Ok(Grant {
        id: r.get(0)?,
        number: r.get(1)?,
        agency: r.get(2)?,
        pi: r.get(3)?,
        co_pis: serde_json::from_str(&co_pis).unwrap_or_default(),
        program: r.get(5)?,
        federal_award_id: r.get(6)?,
        start: r.get(7)?,
        end: r.get(8)?,
        award: Money::from_micros(r.get(9)?),
        indirect_rate_ppm: r.get(10)?,
        account: r.get(11)?,
        account_id: r.get(12)?,
        status: r.get(13)?,
        closed_at: r.get(14)?,
        created_at: r.get(15)?,
        pi_email: r.get(16)?,
    })
}

impl Tx<'_> {
    pub fn grant_by_number(&self, number: &str) -> Result<Option<Grant>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(&format!(
                "SELECT {GRANT_COLS} FROM grant_accounts g LEFT JOIN accounts a ON a.id = g.budget_account_id
                 WHERE g.grant_number = ?1"
            ))?
            .query_row([number], grant_from_row)
            .optional()
        })
    }

    /// Grants by number (only active ones with `active_only`; only one agency's,
    /// compared without case, with `agency`).
    pub fn grants(&self, active_only: bool, agency: Option<&str>) -> Result<Vec<Grant>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(&format!(
                "SELECT {GRANT_COLS} FROM grant_accounts g LEFT JOIN accounts a ON a.id = g.budget_account_id
                 WHERE (?1 = 0 OR g.status = 'active') AND (CAST(?2 AS TEXT) IS NULL OR lower(g.funding_agency) = lower(?2))
                 ORDER BY g.grant_number"
            ))?
            .query_map(params![active_only, agency], grant_from_row)?
            .collect()
        })
    }

    /// A grant's periods, in order.
    pub fn period_rows(&self, grant_id: i64) -> Result<Vec<PeriodRow>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT p.period_no, p.start_date, p.end_date, p.amount_micros, p.allocation_id,
                        al.amount_micros, coalesce(al.debited_micros, 0), g.indirect_rate_ppm
                 FROM grant_periods p JOIN grant_accounts g ON g.id = p.grant_id
                 LEFT JOIN allocations al ON al.id = p.allocation_id
                 WHERE p.grant_id = ?1 ORDER BY p.period_no",
            )?
            .query_map([grant_id], |r| {
                Ok(PeriodRow {
                    period_no: r.get(0)?,
                    start: r.get(1)?,
                    end: r.get(2)?,
                    amount: Money::from_micros(r.get(3)?),
                    allocation_id: r.get(4)?,
                    allocation_amount: r.get::<_, Option<i64>>(5)?.map(Money::from_micros),
                    direct_spent: Money::from_micros(r.get(6)?),
                    indirect_rate_ppm: r.get(7)?,
                })
            })?
            .collect()
        })
    }

    /// A new grant's row; its id.
    pub fn insert_grant(&self, g: &NewGrantRow<'_>) -> Result<i64, LedgerError> {
        self.sql(|c| {
            c.query_row(
                "INSERT INTO grant_accounts (grant_number, funding_agency, principal_investigator, co_pis, program,
                   federal_award_id, grant_start_date, grant_end_date, total_award_micros, indirect_rate_ppm,
                   budget_account_id, created_at, pi_email)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 RETURNING id",
                params![
                    g.number,
                    g.agency,
                    g.pi,
                    g.co_pis_json,
                    g.program,
                    g.federal_award_id,
                    g.start,
                    g.end,
                    g.award.micros(),
                    g.indirect_rate_ppm,
                    g.account_id,
                    g.created_at,
                    g.pi_email
                ],
                |r| r.get(0),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn insert_grant_period(
        &self,
        grant_id: i64,
        period_no: u32,
        start: i64,
        end: i64,
        amount: Money,
        allocation_id: Option<i64>,
    ) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.execute(
                "INSERT INTO grant_periods (grant_id, period_no, start_date, end_date, amount_micros, allocation_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![grant_id, period_no, start, end, amount.micros(), allocation_id],
            )
        })?;
        Ok(())
    }

    /// Marks a grant closed at `now`.
    pub fn close_grant_row(&self, grant_id: i64, now: i64) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.execute(
                "UPDATE grant_accounts SET status = 'closed', closed_at = ?2 WHERE id = ?1",
                params![grant_id, now],
            )
        })?;
        Ok(())
    }

    /// An allocation's window ends at `now`; one that has not started yet becomes one
    /// second long, in the past.
    pub fn end_allocation(&self, allocation_id: i64, now: i64) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.execute(
                "UPDATE allocations SET valid_from = CASE WHEN valid_from < ?2 - 1 THEN valid_from ELSE ?2 - 1 END, valid_until = ?2 WHERE id = ?1",
                params![allocation_id, now],
            )
        })?;
        Ok(())
    }

    /// Sets or removes a grant's PI address; false when there is no such grant.
    pub fn set_grant_pi_email(&self, number: &str, pi_email: Option<&str>) -> Result<bool, LedgerError> {
        let n = self.sql(|c| {
            c.execute("UPDATE grant_accounts SET pi_email = ?2 WHERE grant_number = ?1", params![number, pi_email])
        })?;
        Ok(n == 1)
    }
}
