// SPDX-License-Identifier: GPL-2.0-or-later
//! What the machine says, for the command lines and the API alike: the time they act
//! at and the local user database.

use crate::core::safe_fs::passwd_find;

/// The time commands act at: now, or `ASBB_NOW` (unix seconds or RFC 3339), which
/// makes reports and tests reproducible.
pub fn now() -> Result<i64, String> {
    match std::env::var("ASBB_NOW") {
        Ok(v) if !v.is_empty() => {
            if let Ok(n) = v.parse::<i64>() {
                return Ok(n);
            }
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| t.timestamp())
                .map_err(|_| format!("ASBB_NOW '{v}' is not unix seconds or RFC 3339"))
        }
        _ => Ok(chrono::Utc::now().timestamp()),
    }
}

/// Looks a uid up in /etc/passwd.
pub fn user_name(uid: u32) -> Option<String> {
    passwd_find(|_, u| u == uid).map(|(name, _, _)| name)
}

/// A user's uid and primary gid from /etc/passwd.
pub fn passwd_ids(name: &str) -> Option<(u32, u32)> {
    passwd_find(|n, _| n == name).map(|(_, uid, gid)| (uid, gid))
}

/// `alice` → (alice, uid of alice); `1001` → (name of 1001 or "1001", 1001).
pub fn resolve_user(text: &str) -> (String, Option<u32>) {
    let t = text.trim();
    if let Ok(uid) = t.parse::<u32>() {
        return (user_name(uid).unwrap_or_else(|| t.to_string()), Some(uid));
    }
    (t.to_string(), passwd_ids(t).map(|(uid, _)| uid))
}
