// SPDX-License-Identifier: GPL-2.0-or-later
//! Account members: who may read an account over the unix socket.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user: String,
    pub uid: Option<u32>,
    /// "member" (added by an admin) or "jobs" (has run jobs in the account).
    pub via: String,
    pub added_at: Option<String>,
    pub added_by: Option<String>,
}

impl Budget {
    /// Adds `user` (with its uid when known) to `account`'s members; false if already one.
    pub fn add_member(
        &mut self,
        account: &str,
        user: &str,
        uid: Option<u32>,
        actor: &str,
        now: i64,
    ) -> Result<bool, IntegrationError> {
        check_name("user", user)?;
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::write(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let n = tx
            .tx
            .execute(
                "INSERT OR IGNORE INTO account_members (account_id, user_name, uid, added_at, added_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![acc.id, user, uid, now, actor],
            )
            .map_err(&e)?;
        if n == 1 {
            crate::core::ledger::postings::audit(&tx, actor, now, "account member add", &format!("{account} {user}"))?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Removes `user` from `account`'s members; false if it was not one.
    pub fn remove_member(
        &mut self,
        account: &str,
        user: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::write(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let n = tx
            .tx
            .execute("DELETE FROM account_members WHERE account_id = ?1 AND user_name = ?2", params![acc.id, user])
            .map_err(&e)?;
        if n == 1 {
            crate::core::ledger::postings::audit(
                &tx,
                actor,
                now,
                "account member remove",
                &format!("{account} {user}"),
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// An account's members and the users who ran jobs in it.
    pub fn members(&mut self, account: &str) -> Result<Vec<Member>, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::read(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let mut out: Vec<Member> = tx
            .tx
            .prepare_cached(
                "SELECT user_name, uid, added_at, added_by FROM account_members WHERE account_id = ?1 ORDER BY user_name",
            )
            .and_then(|mut s| {
                s.query_map([acc.id], |r| {
                    Ok(Member {
                        user: r.get(0)?,
                        uid: r.get(1)?,
                        via: "member".into(),
                        added_at: Some(format_time(r.get(2)?)),
                        added_by: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(&e)?;
        let with_jobs: Vec<(String, u32)> = tx
            .tx
            .prepare_cached("SELECT DISTINCT user_name, uid FROM jobs WHERE account_id = ?1 ORDER BY user_name, uid")
            .and_then(|mut s| s.query_map([acc.id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(&e)?;
        for (user, uid) in with_jobs {
            if !out.iter().any(|m| m.user == user) {
                out.push(Member { user, uid: Some(uid), via: "jobs".into(), added_at: None, added_by: None });
            }
        }
        Ok(out)
    }

    /// The accounts a user may read: those they ran jobs in (by uid) and those they are a
    /// member of (by uid or name).
    pub fn accounts_of_user(&mut self, uid: u32, name: Option<&str>) -> Result<Vec<String>, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        self.ledger
            .conn
            .prepare_cached(
                "SELECT a.name FROM accounts a WHERE
                   EXISTS (SELECT 1 FROM account_job_users u WHERE u.account_id = a.id AND u.uid = ?1)
                   OR EXISTS (SELECT 1 FROM account_members m WHERE m.account_id = a.id
                              AND (m.uid = ?1 OR (?2 IS NOT NULL AND m.user_name = ?2)))
                 ORDER BY a.name",
            )
            .and_then(|mut s| s.query_map(params![uid, name], |r| r.get(0))?.collect())
            .map_err(e)
    }
}
