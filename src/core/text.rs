// SPDX-License-Identifier: GPL-2.0-or-later
//! Text that crosses asbb's boundaries: user text made safe to show, the names asbb
//! accepts (one rule type for accounts, sources and metadata), and the hold token asbb
//! writes into a job's admin comment (`asbb:hold=<token>`, which users cannot set).

use std::collections::BTreeSet;

/// Longest user text asbb copies into logs or messages.
pub const MAX_TEXT_LEN: usize = 256;

/// Extracts `asbb:hold=<token>` from an admin comment.
pub fn hold_token(admin_comment: Option<&str>) -> Option<String> {
    hold_token_str(admin_comment?).map(str::to_string)
}

/// [`hold_token`] without copying: the token as a slice of `text`.
pub fn hold_token_str(text: &str) -> Option<&str> {
    let start = text.find(HOLD_PREFIX)? + HOLD_PREFIX.len();
    let rest = &text[start..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

pub const HOLD_PREFIX: &str = "asbb:hold=";

/// `admin_comment` with the hold token added, keeping any existing text.
pub fn with_hold_token(admin_comment: Option<&str>, token: &str) -> String {
    let tag = format!("{HOLD_PREFIX}{token}");
    match admin_comment.map(str::trim).filter(|s| !s.is_empty()) {
        Some(existing) if hold_token(Some(existing)).is_some() => {
            let old = hold_token(Some(existing)).unwrap_or_default();
            existing.replace(&format!("{HOLD_PREFIX}{old}"), &tag)
        }
        Some(existing) => format!("{existing} {tag}"),
        None => tag,
    }
}

/// Strips control characters and bounds length, so user text cannot forge log lines.
pub fn clean_text(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(MAX_TEXT_LEN).collect();
    if text.chars().filter(|c| !c.is_control()).count() > MAX_TEXT_LEN {
        out.push('…');
    }
    out
}

/// Every `asbb:hold=<token>` in a text.
pub fn all_hold_tokens(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(HOLD_PREFIX) {
        if let Some(t) = hold_token(Some(&rest[i..])) {
            out.insert(t);
        }
        rest = &rest[i + HOLD_PREFIX.len()..];
    }
    out
}

/// What a name may be: 1 to `max_len` bytes of ASCII letters, digits and `extra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRule {
    pub max_len: usize,
    pub extra: &'static str,
}

/// A budget account: a SLURM account name.
pub const ACCOUNT_NAME: NameRule = NameRule { max_len: 64, extra: "_-." };
/// A cost source or member name sent by the sister tools.
pub const SOURCE_NAME: NameRule = NameRule { max_len: 64, extra: "_-.@" };
/// A metadata value (`grant=NSF-12345`, `project=ab/1`).
pub const METADATA_VALUE: NameRule = NameRule { max_len: 64, extra: "_-.:/" };
/// A performance hint's key.
pub const METADATA_KEY: NameRule = NameRule { max_len: 32, extra: "_" };

impl NameRule {
    pub fn accepts(&self, name: &str) -> bool {
        !name.is_empty()
            && name.len() <= self.max_len
            && name.chars().all(|c| c.is_ascii_alphanumeric() || self.extra.contains(c))
    }

    /// `Ok`, or "`what` '`name`' must be 1-64 letters, digits, '_', '-' or '.'".
    pub fn check(&self, what: &str, name: &str) -> Result<(), String> {
        if self.accepts(name) {
            return Ok(());
        }
        let quoted: Vec<String> = self.extra.chars().map(|c| format!("'{c}'")).collect();
        let allowed = match quoted.split_last() {
            Some((last, [])) => format!("letters, digits or {last}"),
            Some((last, rest)) => format!("letters, digits, {} or {last}", rest.join(", ")),
            None => "letters or digits".to_string(),
        };
        Err(format!("{what} '{}' must be 1-{} {allowed}", clean_text(name), self.max_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules_say_what_they_allow() {
        assert_eq!(
            ACCOUNT_NAME.check("account name", "a b").unwrap_err(),
            "account name 'a b' must be 1-64 letters, digits, '_', '-' or '.'"
        );
        assert_eq!(
            SOURCE_NAME.check("source", "").unwrap_err(),
            "source '' must be 1-64 letters, digits, '_', '-', '.' or '@'"
        );
        assert_eq!(METADATA_KEY.check("key", "x-y").unwrap_err(), "key 'x-y' must be 1-32 letters, digits or '_'");
        assert!(METADATA_VALUE.accepts("ab/1:x") && !METADATA_VALUE.accepts(&"x".repeat(65)));
    }

    #[test]
    fn hold_tokens_are_found_and_replaced() {
        assert_eq!(hold_token(Some("note asbb:hold=ab.1-2 x")).as_deref(), Some("ab.1-2"));
        assert_eq!(with_hold_token(Some("note asbb:hold=old"), "new"), "note asbb:hold=new");
        assert_eq!(all_hold_tokens("asbb:hold=a asbb:hold=b").len(), 2);
    }
}
