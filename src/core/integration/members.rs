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
        let tx = Tx::write(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let added = tx.add_member(acc.id, user, uid, actor, now)?;
        if added {
            crate::core::ledger::postings::audit(&tx, actor, now, "account member add", &format!("{account} {user}"))?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Removes `user` from `account`'s members; false if it was not one.
    pub fn remove_member(
        &mut self,
        account: &str,
        user: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, IntegrationError> {
        let tx = Tx::write(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let removed = tx.remove_member(acc.id, user)?;
        if removed {
            crate::core::ledger::postings::audit(
                &tx,
                actor,
                now,
                "account member remove",
                &format!("{account} {user}"),
            )?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// An account's members and the users who ran jobs in it.
    pub fn members(&mut self, account: &str) -> Result<Vec<Member>, IntegrationError> {
        let tx = Tx::read(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let mut out: Vec<Member> = tx
            .members_of(acc.id)?
            .into_iter()
            .map(|m| Member {
                user: m.user,
                uid: m.uid,
                via: "member".into(),
                added_at: Some(format_time(m.added_at)),
                added_by: m.added_by,
            })
            .collect();
        let with_jobs = tx.job_users_of(acc.id)?;
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
        Ok(self.ledger.accounts_of_user(uid, name)?)
    }
}
