// SPDX-License-Identifier: GPL-2.0-or-later
//! Money: an integer count of micro-dollars with checked arithmetic.
//!
//! A micro-dollar is fine enough for per-second prices (a $0.01/hour rate costs
//! 2.78 micro-dollars a second), and an `i64` of them holds ±9.2 trillion dollars.
//! No floating point ever touches a balance.
//!
//! Rounding rule (the one place it happens): amounts shown to people are rounded to
//! cents half away from zero (`$0.005` → `$0.01`, `-$0.005` → `-$0.01`). Costs
//! computed from rates are rounded to the micro-dollar half up (see `cost.rs`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Micro-dollars per dollar.
pub const MICROS_PER_UNIT: i64 = 1_000_000;
/// Digits after the decimal point that an amount may carry.
pub const MAX_FRACTION_DIGITS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount '{0}' is negative; amounts must be zero or more")]
    Negative(String),
    #[error("amount '{0}' is not a decimal number like 1250.50")]
    Malformed(String),
    #[error("amount '{0}' has more than 6 digits after the decimal point")]
    TooPrecise(String),
    #[error("amount '{0}' is too large")]
    TooLarge(String),
    #[error("arithmetic overflow")]
    Overflow,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_micros(micros: i64) -> Money {
        Money(micros)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn from_dollars(dollars: i64) -> Option<Money> {
        dollars.checked_mul(MICROS_PER_UNIT).map(Money)
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    pub fn checked_mul(self, factor: i64) -> Option<Money> {
        self.0.checked_mul(factor).map(Money)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn min(self, other: Money) -> Money {
        Money(self.0.min(other.0))
    }

    pub fn max(self, other: Money) -> Money {
        Money(self.0.max(other.0))
    }

    /// Sum with overflow detection.
    pub fn sum<I: IntoIterator<Item = Money>>(items: I) -> Result<Money, MoneyError> {
        items.into_iter().try_fold(Money::ZERO, |acc, m| acc.checked_add(m).ok_or(MoneyError::Overflow))
    }

    /// Whole cents, rounded half away from zero. The one rounding rule for display.
    pub fn round_to_cents(self) -> i64 {
        let per_cent = MICROS_PER_UNIT / 100;
        let q = self.0 / per_cent;
        let r = self.0 % per_cent;
        if r.abs() * 2 >= per_cent {
            q + self.0.signum()
        } else {
            q
        }
    }

    /// `1250.50`, `-3.00`: cents, no currency sign, no grouping (JSON, CSV, scripts).
    pub fn to_decimal_string(self) -> String {
        let cents = self.round_to_cents();
        let sign = if cents < 0 { "-" } else { "" };
        let abs = cents.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }

    /// Exact decimal with up to six fraction digits, trailing zeros trimmed to two.
    pub fn to_exact_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_UNIT as u64;
        let frac = format!("{:06}", abs % MICROS_PER_UNIT as u64);
        let trimmed = frac.trim_end_matches('0');
        let frac = if trimmed.len() < 2 { &frac[..2] } else { trimmed };
        format!("{sign}{whole}.{frac}")
    }

    /// Parses a user amount: `250000`, `250000.00`, `1,250.50`, `$12.5`.
    /// Refuses negatives, exponents, NaN, more than six fraction digits, empty text.
    pub fn parse(text: &str) -> Result<Money, MoneyError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(MoneyError::Empty);
        }
        if t.starts_with('-') {
            return Err(MoneyError::Negative(t.to_string()));
        }
        let t2 = t.strip_prefix('$').unwrap_or(t);
        let (whole, frac) = match t2.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (t2, None),
        };
        if whole.is_empty() && frac.map_or(true, |f| f.is_empty()) {
            return Err(MoneyError::Malformed(t.to_string()));
        }
        let whole_digits = parse_grouped_digits(whole).ok_or_else(|| MoneyError::Malformed(t.to_string()))?;
        let mut micros: i64 = 0;
        for ch in whole_digits.chars() {
            let d = ch as i64 - '0' as i64;
            micros = micros
                .checked_mul(10)
                .and_then(|v| v.checked_add(d))
                .ok_or_else(|| MoneyError::TooLarge(t.to_string()))?;
        }
        micros = micros.checked_mul(MICROS_PER_UNIT).ok_or_else(|| MoneyError::TooLarge(t.to_string()))?;
        if let Some(f) = frac {
            if f.is_empty() || !f.chars().all(|c| c.is_ascii_digit()) {
                return Err(MoneyError::Malformed(t.to_string()));
            }
            if f.len() > MAX_FRACTION_DIGITS {
                return Err(MoneyError::TooPrecise(t.to_string()));
            }
            let padded = format!("{f:0<6}");
            let frac_micros: i64 = padded.parse().map_err(|_| MoneyError::Malformed(t.to_string()))?;
            micros = micros.checked_add(frac_micros).ok_or_else(|| MoneyError::TooLarge(t.to_string()))?;
        }
        Ok(Money(micros))
    }
}

/// Digits with optional thousands separators in the right places (`1,250`).
fn parse_grouped_digits(whole: &str) -> Option<String> {
    if whole.is_empty() {
        return Some("0".to_string());
    }
    if !whole.contains(',') {
        return whole.chars().all(|c| c.is_ascii_digit()).then(|| whole.to_string());
    }
    let groups: Vec<&str> = whole.split(',').collect();
    let first_ok = !groups[0].is_empty() && groups[0].len() <= 3;
    let rest_ok = groups[1..].iter().all(|g| g.len() == 3);
    let digits_ok = groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()));
    (first_ok && rest_ok && digits_ok).then(|| groups.concat())
}

/// `$1,250.50`, `-$3.00`: what people read.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cents = self.round_to_cents();
        let sign = if cents < 0 { "-" } else { "" };
        let abs = cents.unsigned_abs();
        let whole = (abs / 100).to_string();
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (i, ch) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(ch);
        }
        let text = format!("{sign}${grouped}.{:02}", abs % 100);
        f.pad(&text)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_decimal_string())
    }
}

/// Config values may be written as strings (`"0.02"`) or TOML numbers (`0.02`).
/// A number goes through its shortest decimal text, so `0.02` is exactly 20000 micros.
impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(i) => i.to_string(),
            Raw::Float(x) if x.is_finite() => format!("{x}"),
            Raw::Float(x) => x.to_string(),
            Raw::Text(s) => s,
        };
        Money::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accepted_forms() {
        assert_eq!(Money::parse("250000").unwrap().micros(), 250_000_000_000);
        assert_eq!(Money::parse("250000.00").unwrap().micros(), 250_000_000_000);
        assert_eq!(Money::parse("1,250.50").unwrap().micros(), 1_250_500_000);
        assert_eq!(Money::parse("$12.5").unwrap().micros(), 12_500_000);
        assert_eq!(Money::parse("0.000001").unwrap().micros(), 1);
        assert_eq!(Money::parse(".5").unwrap().micros(), 500_000);
    }

    #[test]
    fn refuses_bad_forms() {
        assert_eq!(Money::parse(""), Err(MoneyError::Empty));
        assert_eq!(Money::parse("-5"), Err(MoneyError::Negative("-5".into())));
        assert_eq!(Money::parse("1e3"), Err(MoneyError::Malformed("1e3".into())));
        assert_eq!(Money::parse("NaN"), Err(MoneyError::Malformed("NaN".into())));
        assert_eq!(Money::parse("12.345678901"), Err(MoneyError::TooPrecise("12.345678901".into())));
        assert_eq!(Money::parse("1,25.0"), Err(MoneyError::Malformed("1,25.0".into())));
        assert_eq!(Money::parse("1."), Err(MoneyError::Malformed("1.".into())));
        assert!(matches!(Money::parse("99999999999999999999"), Err(MoneyError::TooLarge(_))));
    }

    #[test]
    fn displays_with_currency_and_cents() {
        assert_eq!(Money::from_micros(1_250_500_000).to_string(), "$1,250.50");
        assert_eq!(Money::from_micros(5_000).to_string(), "$0.01");
        assert_eq!(Money::from_micros(4_999).to_string(), "$0.00");
        assert_eq!(Money::from_micros(-5_000).to_string(), "-$0.01");
        assert_eq!(Money::from_micros(-3_000_000).to_decimal_string(), "-3.00");
        assert_eq!(Money::from_micros(1_234_567_890_000).to_string(), "$1,234,567.89");
        assert_eq!(Money::from_micros(2_780).to_exact_string(), "0.00278");
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert!(Money::from_micros(i64::MAX).checked_add(Money::from_micros(1)).is_none());
        assert_eq!(Money::sum([Money::from_micros(i64::MAX), Money::from_micros(1)]), Err(MoneyError::Overflow));
    }
}
