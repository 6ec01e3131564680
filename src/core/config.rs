// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb.toml`: where the ledger lives, how jobs are priced, and what to do when
//! something is missing. Every key is checked: an unknown key, a negative rate or a
//! partition without prices is refused with the file, the key and the reason.

use crate::core::money::Money;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The import source name (the idempotency key's last part).
pub const IMPORT_SOURCE: &str = "aws-import";

/// Where the config is looked for when nothing else says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/slurm/asbb.toml";
pub const DEFAULT_LEDGER_PATH: &str = "/var/lib/asbb/ledger.db";
/// Upper bound for the SQLite busy wait inside slurmctld.
pub const MAX_BUSY_TIMEOUT_MS: u32 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnLedgerError {
    /// Refuse the job (fail closed).
    #[default]
    Reject,
    /// Let the job in without a hold (fail open); reconcile charges it later.
    Accept,
}

/// Which SLURM hook settles a job when it ends: `JobCompType=jobcomp/asbb`, or
/// `PrEpPlugins=asbb,...` beside a site's own JobCompType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CompletionHook {
    #[default]
    Jobcomp,
    Prep,
}

impl CompletionHook {
    pub fn as_str(self) -> &'static str {
        match self {
            CompletionHook::Jobcomp => "jobcomp",
            CompletionHook::Prep => "prep",
        }
    }
}

/// What to do with a job that asbb cannot price or place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    #[default]
    Reject,
    /// Let the job through untouched and uncharged.
    Exempt,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub on_ledger_error: OnLedgerError,
    /// Bounded wait for the SQLite write lock, in milliseconds.
    #[serde(default = "default_busy_timeout_ms")]
    pub ledger_busy_timeout_ms: u32,
    /// A job whose SLURM account has no budget account in the ledger.
    #[serde(default)]
    pub unknown_account: MissingPolicy,
    /// A job with no account at all (no `-A` and no default account).
    #[serde(default)]
    pub no_account: MissingPolicy,
    /// A partition with no prices in this file.
    #[serde(default)]
    pub unpriced_partition: MissingPolicy,
    /// A job whose time limit is INFINITE: reject asks the user for `--time`.
    #[serde(default)]
    pub infinite_time_limit: MissingPolicy,
    #[serde(default)]
    pub minimum_charge: Money,
    #[serde(default)]
    pub exempt_accounts: Vec<String>,
    #[serde(default)]
    pub exempt_partitions: Vec<String>,
    /// Jobs estimated above this are submitted held until an admin approves them.
    #[serde(default)]
    pub approval_threshold: Option<Money>,
    /// Short of funds, but an allocation starts within this many days: hold, not reject.
    #[serde(default)]
    pub low_balance_hold_days: u32,
    /// A deposit releases the account's held jobs that now fit, oldest first.
    #[serde(default)]
    pub release_held_on_deposit: bool,
    /// The hook slurm.conf loads to settle ended jobs; each plugin warns at start when
    /// slurm.conf does not match.
    #[serde(default)]
    pub completion_hook: CompletionHook,
}

fn default_busy_timeout_ms() -> u32 {
    50
}

/// Hourly prices for one partition: exactly one of the three ways.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// Per-TRES rates in dollars per hour: `cpu`, `mem_gb`, `node`, `gres/gpu`,
    /// `gres/gpu:<type>`.
    pub rates: Option<BTreeMap<String, Money>>,
    pub billing: Option<BillingConfig>,
    pub aws: Option<AwsConfig>,
    /// Used by estimates when the job (and SLURM) give no time limit.
    pub default_time_limit_min: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// Dollars per SLURM billing unit per hour.
    pub unit_hour: Money,
    /// SLURM's `TRESBillingWeights` syntax, e.g. `CPU=1.0,Mem=0.25G,GRES/gpu=2.0`.
    #[serde(default)]
    pub weights: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub instance_type: String,
    /// `on-demand` or `spot`; a label for reports, the price is `node_hour`.
    #[serde(default = "default_market")]
    pub market: String,
    /// Dollars per node-hour of the instance type.
    pub node_hour: Money,
}

fn default_market() -> String {
    "on-demand".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    ledger: Option<PathBuf>,
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    partitions: BTreeMap<String, PartitionConfig>,
    /// Price multipliers by QOS name, e.g. `high = 1.5`.
    #[serde(default)]
    qos_multipliers: BTreeMap<String, Money>,
    #[serde(default)]
    forecast: RawForecast,
    // Learning from actual costs, and the integration API.
    #[serde(default)]
    learning: RawLearning,
    #[serde(default)]
    api: RawApi,
    /// Per-account overrides of `[policy]`.
    #[serde(default)]
    accounts: BTreeMap<String, AccountPolicy>,
    /// What to tell people, and how (`asbb-admin alerts run`, `serve`).
    #[serde(default)]
    alerts: Option<RawAlerts>,
}

/// `[accounts.<name>]`: one account's own approval threshold and low-balance rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountPolicy {
    pub approval_threshold: Option<Money>,
    /// The grant the account's jobs are held and charged against when they name none.
    pub default_grant: Option<String>,
    pub low_balance_hold_days: Option<u32>,
    pub release_held_on_deposit: Option<bool>,
}

// ----- [forecast] (grant and account burn-rate forecasts) ---------------------------

/// `[forecast]` as written: ratios are decimals (`1.10`), read exactly like amounts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForecast {
    #[serde(default = "default_overspend_ratio")]
    overspend_ratio: Money,
    #[serde(default = "default_underspend_ratio")]
    underspend_ratio: Money,
    #[serde(default = "default_window_days")]
    window_days: u32,
}

impl Default for RawForecast {
    fn default() -> RawForecast {
        RawForecast {
            overspend_ratio: default_overspend_ratio(),
            underspend_ratio: default_underspend_ratio(),
            window_days: default_window_days(),
        }
    }
}

fn default_overspend_ratio() -> Money {
    Money::from_micros(1_100_000)
}

fn default_underspend_ratio() -> Money {
    Money::from_micros(750_000)
}

fn default_window_days() -> u32 {
    30
}

/// Longest trailing window a burn rate may be measured over (five years).
pub const MAX_FORECAST_WINDOW_DAYS: u32 = 1_830;

/// Thresholds for "on track / overspending / underspending": the ratio of percent
/// spent to percent of time elapsed, in parts per million (1.10 = 1_100_000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForecastConfig {
    pub overspend_ratio_ppm: i64,
    pub underspend_ratio_ppm: i64,
    /// Default trailing window for burn rates.
    pub window_days: u32,
}

impl Default for ForecastConfig {
    fn default() -> ForecastConfig {
        ForecastConfig {
            overspend_ratio_ppm: default_overspend_ratio().micros(),
            underspend_ratio_ppm: default_underspend_ratio().micros(),
            window_days: default_window_days(),
        }
    }
}

fn forecast_config(raw: &RawForecast) -> Result<ForecastConfig, String> {
    let (over, under) = (raw.overspend_ratio.micros(), raw.underspend_ratio.micros());
    if over < 1_000_000 {
        return Err(format!(
            "forecast.overspend_ratio: {} must be at least 1.0",
            raw.overspend_ratio.to_exact_string()
        ));
    }
    if under <= 0 || under > 1_000_000 {
        return Err(format!(
            "forecast.underspend_ratio: {} must be above 0 and at most 1.0",
            raw.underspend_ratio.to_exact_string()
        ));
    }
    if raw.window_days == 0 || raw.window_days > MAX_FORECAST_WINDOW_DAYS {
        return Err(format!("forecast.window_days: {} must be from 1 to {MAX_FORECAST_WINDOW_DAYS}", raw.window_days));
    }
    Ok(ForecastConfig { overspend_ratio_ppm: over, underspend_ratio_ppm: under, window_days: raw.window_days })
}

// ----- [alerts] (thresholds, webhook, mail) ---------------------------------

/// `[alerts]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    #[serde(default = "default_spent_percent")]
    spent_percent: Vec<u32>,
    #[serde(default = "default_true")]
    projected_exhaustion: bool,
    #[serde(default)]
    approval_wait_hours: Option<u32>,
    #[serde(default)]
    hold_age_hours: Option<u32>,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    webhook_timeout_ms: Option<u32>,
    #[serde(default)]
    mail_command: Option<Vec<String>>,
    #[serde(default)]
    mail_from: Option<String>,
    #[serde(default)]
    mail_to: Vec<String>,
    #[serde(default = "default_true")]
    mail_pi: bool,
    #[serde(default)]
    mail_timeout_ms: Option<u32>,
    #[serde(default)]
    retry_minutes: Option<u32>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    interval_minutes: Option<u32>,
}

fn default_spent_percent() -> Vec<u32> {
    vec![50, 75, 90, 100]
}

pub const DEFAULT_ALERT_WEBHOOK_TIMEOUT_MS: u32 = 5_000;
pub const DEFAULT_ALERT_MAIL_TIMEOUT_MS: u32 = 10_000;
pub const DEFAULT_ALERT_RETRY_MINUTES: u32 = 5;
pub const DEFAULT_ALERT_MAX_ATTEMPTS: u32 = 12;
pub const DEFAULT_ALERT_INTERVAL_MINUTES: u32 = 10;

/// `[alerts]`: which crossings to announce and where. Each crossing is raised once
/// and kept in the ledger with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// Percent of a grant's award or an account's allocations spent, ascending.
    pub spent_percent: Vec<u32>,
    /// A grant or account projected (at the forecast's burn rate) to run out before its end.
    pub projected_exhaustion: bool,
    /// A job that has awaited approval this long; `None`: not watched.
    pub approval_wait_hours: Option<u32>,
    /// A hold open this long; `None`: not watched.
    pub hold_age_hours: Option<u32>,
    /// JSON POST with a Slack-compatible body (`text`).
    pub webhook_url: Option<String>,
    pub webhook_timeout_ms: u32,
    /// A sendmail-style command (no shell): the message, headers first, on its stdin.
    pub mail_command: Option<Vec<String>>,
    pub mail_from: String,
    /// Always mailed.
    pub mail_to: Vec<String>,
    /// Also mail the PI of the grant (or of the grants funding the account).
    pub mail_pi: bool,
    pub mail_timeout_ms: u32,
    /// A failed delivery is tried again after this long.
    pub retry_minutes: u32,
    /// Then it is given up (and shown so by `asbb-admin alerts list`).
    pub max_attempts: u32,
    /// How often `asbb-admin serve` runs the alerts.
    pub interval_minutes: u32,
}

/// A mail address as alerts accept it: `local@domain`, printable, no spaces, nothing a
/// mail header could be split or extended with.
pub fn check_mail_address(addr: &str) -> Result<(), String> {
    let ok = addr.len() <= 254
        && addr.chars().all(|c| c.is_ascii_graphic() && !"<>,;\"()[]".contains(c))
        && matches!(addr.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@') && !d.starts_with('.') && !d.ends_with('.'));
    if ok {
        Ok(())
    } else {
        Err(format!("'{}' is not a mail address (local@domain)", crate::core::text::clean_text(addr)))
    }
}

fn alerts_config(raw: &RawAlerts) -> Result<AlertsConfig, String> {
    let mut spent = raw.spent_percent.clone();
    for &p in &spent {
        if !(1..=1000).contains(&p) {
            return Err(format!("alerts.spent_percent: {p} must be from 1 to 1000"));
        }
    }
    spent.sort_unstable();
    spent.dedup();
    if let Some(h) = raw.approval_wait_hours.filter(|&h| h > 24 * 366) {
        return Err(format!("alerts.approval_wait_hours: {h} must be at most {}", 24 * 366));
    }
    if let Some(h) = raw.hold_age_hours.filter(|&h| h == 0 || h > 24 * 366) {
        return Err(format!("alerts.hold_age_hours: {h} must be from 1 to {}", 24 * 366));
    }
    let webhook_url = match raw.webhook_url.as_deref().map(str::trim) {
        Some(u) => {
            let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
            if rest.map_or(true, |r| r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control())) {
                return Err(format!(
                    "alerts.webhook_url: '{}' is not an http:// or https:// URL",
                    crate::core::text::clean_text(u)
                ));
            }
            Some(u.to_string())
        }
        None => None,
    };
    if let Some(cmd) = &raw.mail_command {
        match cmd.first() {
            Some(prog) if prog.starts_with('/') => {}
            _ => return Err("alerts.mail_command: give the program's absolute path first, then its arguments, e.g. [\"/usr/sbin/sendmail\", \"-t\", \"-i\"]".into()),
        }
    }
    if webhook_url.is_none() && raw.mail_command.is_none() {
        return Err("alerts: give webhook_url or mail_command (or both): where alerts are sent".into());
    }
    for a in &raw.mail_to {
        check_mail_address(a).map_err(|r| format!("alerts.mail_to: {r}"))?;
    }
    if raw.mail_command.is_some() && raw.mail_to.is_empty() && !raw.mail_pi {
        return Err("alerts.mail_to: empty, and mail_pi = false: mail would reach no one".into());
    }
    let mail_from = raw.mail_from.clone().unwrap_or_else(|| "asbb".to_string());
    if mail_from.is_empty() || mail_from.chars().any(|c| c.is_control() || "<>,;\"".contains(c)) {
        return Err(format!("alerts.mail_from: '{}' cannot be a sender", crate::core::text::clean_text(&mail_from)));
    }
    let ranged = |key: &str, v: Option<u32>, default: u32, range: std::ops::RangeInclusive<u32>| {
        let v = v.unwrap_or(default);
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(format!("alerts.{key}: {v} must be from {} to {}", range.start(), range.end()))
        }
    };
    Ok(AlertsConfig {
        spent_percent: spent,
        projected_exhaustion: raw.projected_exhaustion,
        approval_wait_hours: raw.approval_wait_hours,
        hold_age_hours: raw.hold_age_hours,
        webhook_url,
        webhook_timeout_ms: ranged(
            "webhook_timeout_ms",
            raw.webhook_timeout_ms,
            DEFAULT_ALERT_WEBHOOK_TIMEOUT_MS,
            100..=60_000,
        )?,
        mail_command: raw.mail_command.clone(),
        mail_from,
        mail_to: raw.mail_to.clone(),
        mail_pi: raw.mail_pi,
        // Both at most a minute, the shortest retry_minutes: a delivery claimed by one
        // run is never tried by another while the first may still be trying it.
        mail_timeout_ms: ranged("mail_timeout_ms", raw.mail_timeout_ms, DEFAULT_ALERT_MAIL_TIMEOUT_MS, 100..=60_000)?,
        retry_minutes: ranged("retry_minutes", raw.retry_minutes, DEFAULT_ALERT_RETRY_MINUTES, 1..=1440)?,
        max_attempts: ranged("max_attempts", raw.max_attempts, DEFAULT_ALERT_MAX_ATTEMPTS, 1..=1000)?,
        interval_minutes: ranged("interval_minutes", raw.interval_minutes, DEFAULT_ALERT_INTERVAL_MINUTES, 1..=1440)?,
    })
}

// ----- [learning] and [api] (integration API, learning) ---------------------

/// `[learning]` as written. Ratios are decimals read exactly like amounts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLearning {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_min_hold_factor")]
    min_hold_factor: Money,
    #[serde(default = "default_min_samples")]
    min_samples: u32,
    #[serde(default = "default_window_samples")]
    window_samples: u32,
    #[serde(default = "default_percentile")]
    percentile: u32,
    #[serde(default = "default_true")]
    include_feedback: bool,
}

impl Default for RawLearning {
    fn default() -> RawLearning {
        RawLearning {
            enabled: false,
            min_hold_factor: default_min_hold_factor(),
            min_samples: default_min_samples(),
            window_samples: default_window_samples(),
            percentile: default_percentile(),
            include_feedback: true,
        }
    }
}

fn default_min_hold_factor() -> Money {
    Money::from_micros(500_000)
}

fn default_min_samples() -> u32 {
    20
}

fn default_window_samples() -> u32 {
    200
}

fn default_percentile() -> u32 {
    90
}

fn default_true() -> bool {
    true
}

/// Most samples one hold decision may read.
pub const MAX_LEARNING_WINDOW: u32 = 10_000;

/// How holds learn from history: hold = estimate × factor, the factor being the
/// `percentile` of actual/estimated cost over the last `window_samples` samples of the
/// job's (account, partition, domain), clamped to `[min_hold_factor_ppm, 1_000_000]`,
/// used once the group has `min_samples`. Disabled, every hold is the estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearningConfig {
    pub enabled: bool,
    /// Parts per million (0.5 = 500_000), in (0, 1_000_000].
    pub min_hold_factor_ppm: i64,
    pub min_samples: u32,
    pub window_samples: u32,
    pub percentile: u32,
    /// Whether performance feedback samples count, besides reconciled runs.
    pub include_feedback: bool,
}

impl Default for LearningConfig {
    fn default() -> LearningConfig {
        learning_config(&RawLearning::default()).expect("defaults are valid")
    }
}

fn learning_config(raw: &RawLearning) -> Result<LearningConfig, String> {
    let min = raw.min_hold_factor.micros();
    if min <= 0 || min > 1_000_000 {
        return Err(format!(
            "learning.min_hold_factor: {} must be above 0 and at most 1.0",
            raw.min_hold_factor.to_exact_string()
        ));
    }
    if raw.window_samples == 0 || raw.window_samples > MAX_LEARNING_WINDOW {
        return Err(format!("learning.window_samples: {} must be from 1 to {MAX_LEARNING_WINDOW}", raw.window_samples));
    }
    if raw.min_samples == 0 || raw.min_samples > raw.window_samples {
        return Err(format!(
            "learning.min_samples: {} must be from 1 to window_samples ({})",
            raw.min_samples, raw.window_samples
        ));
    }
    if !(50..=100).contains(&raw.percentile) {
        return Err(format!("learning.percentile: {} must be from 50 to 100", raw.percentile));
    }
    Ok(LearningConfig {
        enabled: raw.enabled,
        min_hold_factor_ppm: min,
        min_samples: raw.min_samples,
        window_samples: raw.window_samples,
        percentile: raw.percentile,
        include_feedback: raw.include_feedback,
    })
}

/// What an API caller may do. `User` is never configured: it is anyone on the unix
/// socket who is not root, the ledger's owner or a listed peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiRole {
    /// Read their own accounts (accounts they have jobs in or are members of).
    User,
    /// GET everything.
    Read,
    /// Read, plus POST feedback, cost updates and budget checks.
    Integration,
    /// Everything.
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::User => "user",
            ApiRole::Read => "read",
            ApiRole::Integration => "integration",
            ApiRole::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    /// Lower-case hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    pub sha256: String,
    pub role: ApiRole,
}

/// A unix-socket peer given a role by user name or uid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiPeer {
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub role: ApiRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    socket: Option<PathBuf>,
    #[serde(default)]
    allow_non_loopback: bool,
    #[serde(default)]
    max_body_bytes: Option<u32>,
    #[serde(default)]
    header_read_timeout_ms: Option<u32>,
    #[serde(default)]
    idle_timeout_ms: Option<u32>,
    #[serde(default)]
    body_read_timeout_ms: Option<u32>,
    #[serde(default)]
    max_connections: Option<u32>,
    #[serde(default)]
    tokens: Vec<ApiToken>,
    #[serde(default)]
    peers: Vec<ApiPeer>,
}

pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8470";
pub const DEFAULT_API_MAX_BODY_BYTES: u32 = 64 * 1024;
pub const MAX_API_BODY_BYTES: u32 = 1024 * 1024;
pub const DEFAULT_API_HEADER_READ_TIMEOUT_MS: u32 = 5_000;
pub const DEFAULT_API_IDLE_TIMEOUT_MS: u32 = 30_000;
pub const DEFAULT_API_BODY_READ_TIMEOUT_MS: u32 = 10_000;
pub const DEFAULT_API_MAX_CONNECTIONS: u32 = 256;
/// The range every `[api] *_timeout_ms` must be in.
pub const API_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=600_000;
pub const MAX_API_CONNECTIONS: u32 = 65_536;

/// `[api]`: `asbb-admin serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: Option<std::net::SocketAddr>,
    pub socket: Option<PathBuf>,
    /// Listening on an address outside 127.0.0.0/8 and ::1 must be asked for.
    pub allow_non_loopback: bool,
    pub max_body_bytes: u32,
    /// From a new connection, or the first byte of a request on a kept-alive one, until
    /// the end of the request's headers; then the connection is closed.
    pub header_read_timeout_ms: u32,
    /// A kept-alive connection with no request (or a response the client does not read)
    /// is closed after this long.
    pub idle_timeout_ms: u32,
    /// From the end of the headers until the whole body has arrived; then 408.
    pub body_read_timeout_ms: u32,
    /// Open connections, TCP and unix socket together; more wait to be accepted.
    pub max_connections: u32,
    pub tokens: Vec<ApiToken>,
    pub peers: Vec<ApiPeer>,
}

impl ApiConfig {
    /// The role of a local user (a unix-socket peer, or whoever runs `asbb-admin`): root
    /// and the ledger file's owner are admins, `[[api.peers]]` give listed users (by uid,
    /// then by name) their role, anyone else is a `user`.
    pub fn local_role(&self, uid: u32, name: Option<&str>, ledger_owner: Option<u32>) -> ApiRole {
        if uid == 0 || Some(uid) == ledger_owner {
            return ApiRole::Admin;
        }
        let by_uid = self.peers.iter().find(|p| p.uid == Some(uid));
        let by_name = || self.peers.iter().find(|p| p.uid.is_none() && name.is_some() && p.user.as_deref() == name);
        by_uid.or_else(by_name).map_or(ApiRole::User, |p| p.role)
    }
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: None,
            socket: None,
            allow_non_loopback: false,
            max_body_bytes: DEFAULT_API_MAX_BODY_BYTES,
            header_read_timeout_ms: DEFAULT_API_HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_API_IDLE_TIMEOUT_MS,
            body_read_timeout_ms: DEFAULT_API_BODY_READ_TIMEOUT_MS,
            max_connections: DEFAULT_API_MAX_CONNECTIONS,
            tokens: Vec::new(),
            peers: Vec::new(),
        }
    }
}

/// Is `name` the import's source (`aws-import`, in any case)? No API caller may carry it.
pub fn is_import_source(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case(IMPORT_SOURCE)
}

fn api_config(raw: &RawApi) -> Result<ApiConfig, String> {
    let listen = match &raw.listen {
        Some(l) => Some(l.trim().parse().map_err(|_| format!("api.listen: '{l}' is not ADDRESS:PORT"))?),
        None => None,
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_API_MAX_BODY_BYTES);
    if !(1024..=MAX_API_BODY_BYTES).contains(&max_body_bytes) {
        return Err(format!("api.max_body_bytes: {max_body_bytes} must be from 1024 to {MAX_API_BODY_BYTES}"));
    }
    let timeout = |key: &str, v: Option<u32>, default: u32| -> Result<u32, String> {
        let v = v.unwrap_or(default);
        if API_TIMEOUT_MS_RANGE.contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "api.{key}: {v} must be from {} to {} (milliseconds)",
                API_TIMEOUT_MS_RANGE.start(),
                API_TIMEOUT_MS_RANGE.end()
            ))
        }
    };
    let header_read_timeout_ms =
        timeout("header_read_timeout_ms", raw.header_read_timeout_ms, DEFAULT_API_HEADER_READ_TIMEOUT_MS)?;
    let idle_timeout_ms = timeout("idle_timeout_ms", raw.idle_timeout_ms, DEFAULT_API_IDLE_TIMEOUT_MS)?;
    let body_read_timeout_ms =
        timeout("body_read_timeout_ms", raw.body_read_timeout_ms, DEFAULT_API_BODY_READ_TIMEOUT_MS)?;
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_API_MAX_CONNECTIONS);
    if !(1..=MAX_API_CONNECTIONS).contains(&max_connections) {
        return Err(format!("api.max_connections: {max_connections} must be from 1 to {MAX_API_CONNECTIONS}"));
    }
    let mut names = std::collections::BTreeSet::new();
    for t in &raw.tokens {
        if t.name.trim().is_empty() || t.name.len() > 64 || t.name.chars().any(char::is_control) {
            return Err("api.tokens: every token needs a name of 1-64 printable characters".into());
        }
        if !names.insert(t.name.as_str()) {
            return Err(format!("api.tokens: the name '{}' is used twice", t.name));
        }
        if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            return Err(format!(
                "api.tokens.{}.sha256: must be 64 lower-case hex digits (printf %s TOKEN | sha256sum)",
                t.name
            ));
        }
        if t.role == ApiRole::User {
            return Err(format!("api.tokens.{}.role: use read, integration or admin", t.name));
        }
        if is_import_source(&t.name) {
            return Err(format!(
                "api.tokens: the name '{}' is reserved: cost updates carry their caller's name as source, and '{}' is the source of `asbb-admin integration import-costs`; name the token after its client",
                t.name,
                IMPORT_SOURCE
            ));
        }
    }
    for p in &raw.peers {
        if p.user.is_some() == p.uid.is_some() {
            return Err("api.peers: give exactly one of user or uid for each peer".into());
        }
        if let Some(u) = p.user.as_deref().filter(|u| is_import_source(u)) {
            return Err(format!(
                "api.peers: the user '{u}' is reserved: cost updates carry their caller's name as source, and '{}' is the source of `asbb-admin integration import-costs`",
                IMPORT_SOURCE
            ));
        }
    }
    Ok(ApiConfig {
        listen,
        socket: raw.socket.clone(),
        allow_non_loopback: raw.allow_non_loopback,
        max_body_bytes,
        header_read_timeout_ms,
        idle_timeout_ms,
        body_read_timeout_ms,
        max_connections,
        tokens: raw.tokens.clone(),
        peers: raw.peers.clone(),
    })
}

fn default_currency() -> String {
    "USD".to_string()
}

/// The priced form of one partition, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    Tres(TresRates),
    Billing { unit_hour: Money, weights: BillingWeights },
    Aws { instance_type: String, market: String, node_hour: Money },
}

/// Hourly rates in micro-dollars.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TresRates {
    pub cpu: Money,
    pub mem_gb: Money,
    pub node: Money,
    /// `None` key is untyped `gres/gpu`.
    pub gpu: Option<Money>,
    pub gpu_typed: BTreeMap<String, Money>,
}

/// Billing weights as micro-units per unit of each TRES (mem per MB).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BillingWeights {
    pub cpu_micro: i64,
    /// Per GB of memory.
    pub mem_gb_micro: i64,
    pub node_micro: i64,
    pub gpu_micro: i64,
    pub gpu_typed_micro: BTreeMap<String, i64>,
    /// No weights given: SLURM bills CPUs, and so do we.
    pub cpus_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub pricing: Pricing,
    pub default_time_limit_min: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this came from, for messages.
    pub source: String,
    pub ledger_path: PathBuf,
    pub currency: String,
    pub policy: Policy,
    pub partitions: BTreeMap<String, Partition>,
    /// Multipliers in micro-units (1.0 = 1_000_000).
    pub qos_multipliers: BTreeMap<String, i64>,
    pub forecast: ForecastConfig,
    /// Hold sizing from history.
    pub learning: LearningConfig,
    /// `asbb-admin serve`.
    pub api: ApiConfig,
    pub accounts: BTreeMap<String, AccountPolicy>,
    /// `[alerts]`; `None`: no alerts are raised.
    pub alerts: Option<AlertsConfig>,
}

impl fmt::Display for Pricing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pricing::Tres(_) => write!(f, "per-TRES rates"),
            Pricing::Billing { unit_hour, .. } => {
                write!(f, "{} per billing unit-hour", unit_hour.to_exact_string())
            }
            Pricing::Aws { instance_type, market, node_hour } => {
                write!(f, "AWS {instance_type} {market} at {} per node-hour", node_hour.to_exact_string())
            }
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { path: shown.clone(), reason: format!("cannot read: {e}") })?;
        Config::parse(&text, &shown)
    }

    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let err = |reason: String| ConfigError { path: source.to_string(), reason };
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(describe_toml_error(text, &e)))?;
        if raw.policy.ledger_busy_timeout_ms > MAX_BUSY_TIMEOUT_MS {
            return Err(err(format!(
                "policy.ledger_busy_timeout_ms: {} is above the limit of {MAX_BUSY_TIMEOUT_MS} ms (slurmctld must not wait long)",
                raw.policy.ledger_busy_timeout_ms
            )));
        }
        let mut partitions = BTreeMap::new();
        for (name, p) in raw.partitions {
            let key = format!("partitions.{name}");
            let pricing = match (&p.rates, &p.billing, &p.aws) {
                (Some(r), None, None) => Pricing::Tres(tres_rates(r, &key).map_err(err)?),
                (None, Some(b), None) => Pricing::Billing {
                    unit_hour: b.unit_hour,
                    weights: parse_billing_weights(&b.weights)
                        .map_err(|r| err(format!("{key}.billing.weights: {r}")))?,
                },
                (None, None, Some(a)) => {
                    if a.instance_type.trim().is_empty() {
                        return Err(err(format!("{key}.aws.instance_type: must name the instance type")));
                    }
                    if a.market != "on-demand" && a.market != "spot" {
                        return Err(err(format!("{key}.aws.market: '{}' is not on-demand or spot", a.market)));
                    }
                    Pricing::Aws {
                        instance_type: a.instance_type.clone(),
                        market: a.market.clone(),
                        node_hour: a.node_hour,
                    }
                }
                (None, None, None) => {
                    return Err(err(format!(
                        "{key}: partition has no rates; give one of [{key}.rates], [{key}.billing] or [{key}.aws]"
                    )))
                }
                _ => return Err(err(format!("{key}: give only one of rates, billing or aws"))),
            };
            if p.default_time_limit_min == Some(0) {
                return Err(err(format!("{key}.default_time_limit_min: must be at least 1")));
            }
            partitions
                .insert(name.clone(), Partition { name, pricing, default_time_limit_min: p.default_time_limit_min });
        }
        let mut qos_multipliers = BTreeMap::new();
        for (qos, m) in raw.qos_multipliers {
            if m.is_zero() {
                return Err(err(format!("qos_multipliers.{qos}: must be above zero")));
            }
            qos_multipliers.insert(qos, m.micros());
        }
        let forecast = forecast_config(&raw.forecast).map_err(err)?;
        let learning = learning_config(&raw.learning).map_err(err)?;
        let api = api_config(&raw.api).map_err(err)?;
        let alerts = raw.alerts.as_ref().map(alerts_config).transpose().map_err(err)?;
        for (name, a) in &raw.accounts {
            if let Some(g) = &a.default_grant {
                if !crate::core::text::METADATA_VALUE.accepts(g) {
                    return Err(err(format!(
                        "accounts.{name}.default_grant: '{g}' is not a grant number (1-64 letters, digits or _ - . : /)"
                    )));
                }
            }
        }
        Ok(Config {
            source: source.to_string(),
            ledger_path: raw.ledger.unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER_PATH)),
            currency: raw.currency,
            policy: raw.policy,
            partitions,
            qos_multipliers,
            forecast,
            learning,
            api,
            accounts: raw.accounts,
            alerts,
        })
    }

    /// The approval threshold for an account: its own, else `[policy]`'s.
    pub fn approval_threshold_for(&self, account: &str) -> Option<Money> {
        self.accounts.get(account).and_then(|a| a.approval_threshold).or(self.policy.approval_threshold)
    }

    /// The grant a job in `account` is charged to when it names none.
    pub fn default_grant_for(&self, account: &str) -> Option<&str> {
        self.accounts.get(account).and_then(|a| a.default_grant.as_deref())
    }

    pub fn low_balance_hold_days_for(&self, account: &str) -> u32 {
        self.accounts.get(account).and_then(|a| a.low_balance_hold_days).unwrap_or(self.policy.low_balance_hold_days)
    }

    /// Whether a deposit releases the account's held jobs that now fit.
    pub fn release_held_on_deposit_for(&self, account: &str) -> bool {
        self.accounts
            .get(account)
            .and_then(|a| a.release_held_on_deposit)
            .unwrap_or(self.policy.release_held_on_deposit)
    }

    /// Why a job in `account` that may run in any of `partitions` is not charged, or
    /// `None` when it is: an exempt account, or every partition exempt (a job listing
    /// several may run in any of them). The one exemption rule for submit, settle and
    /// reconcile.
    pub fn exemption(&self, account: &str, partitions: &[&str]) -> Option<String> {
        let policy = &self.policy;
        if policy.exempt_accounts.iter().any(|a| a == account) {
            return Some(format!("account {account} is exempt"));
        }
        let exempt = |p: &&str| policy.exempt_partitions.iter().any(|e| e == p);
        (!partitions.is_empty() && partitions.iter().all(exempt))
            .then(|| format!("partition {} is exempt", partitions.join(",")))
    }

    /// True when `partition` is exempt (a job listing several is priced at the others).
    pub fn is_exempt_partition(&self, partition: &str) -> bool {
        self.policy.exempt_partitions.iter().any(|p| p == partition)
    }
}

fn tres_rates(raw: &BTreeMap<String, Money>, key: &str) -> Result<TresRates, String> {
    if raw.is_empty() {
        return Err(format!("{key}.rates: no rates given; set at least one of cpu, mem_gb, node, gres/gpu"));
    }
    let mut rates = TresRates::default();
    for (name, &rate) in raw {
        match name.as_str() {
            "cpu" => rates.cpu = rate,
            "mem_gb" => rates.mem_gb = rate,
            "node" => rates.node = rate,
            "gres/gpu" => rates.gpu = Some(rate),
            other => match other.strip_prefix("gres/gpu:") {
                Some(t) if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) => {
                    rates.gpu_typed.insert(t.to_string(), rate);
                }
                _ => {
                    return Err(format!(
                        "{key}.rates.{other}: unknown resource; use cpu, mem_gb, node, gres/gpu or gres/gpu:<type>"
                    ))
                }
            },
        }
    }
    Ok(rates)
}

/// Parses SLURM's `TRESBillingWeights`, e.g. `CPU=1.0,Mem=0.25G,GRES/gpu=2.0`.
pub fn parse_billing_weights(text: &str) -> Result<BillingWeights, String> {
    let mut w = BillingWeights::default();
    if text.trim().is_empty() {
        w.cpus_only = true;
        return Ok(w);
    }
    for item in text.split(',') {
        let (name, value) = item.split_once('=').ok_or_else(|| format!("'{item}' is not NAME=WEIGHT"))?;
        let name = name.trim();
        let value = value.trim();
        let lower = name.to_ascii_lowercase();
        let (digits, per_gb) = if lower == "mem" {
            match value.chars().last() {
                Some('G') | Some('g') => (&value[..value.len() - 1], true),
                Some('T') | Some('t') => (&value[..value.len() - 1], false),
                Some('M') | Some('m') => (&value[..value.len() - 1], false),
                _ => (value, false),
            }
        } else {
            (value, false)
        };
        let weight = Money::parse(digits).map_err(|e| format!("weight for {name}: {e}"))?.micros();
        match lower.as_str() {
            "cpu" => w.cpu_micro = weight,
            "node" => w.node_micro = weight,
            "mem" => {
                // SLURM weights memory per MB unless suffixed; keep per GB internally.
                let suffix_t = value.ends_with(['T', 't']);
                w.mem_gb_micro = if per_gb {
                    weight
                } else if suffix_t {
                    weight / 1024
                } else {
                    weight.checked_mul(1024).ok_or("memory weight too large")?
                };
            }
            "gres/gpu" => w.gpu_micro = weight,
            other => match other.strip_prefix("gres/gpu:") {
                Some(t) if !t.is_empty() => {
                    w.gpu_typed_micro.insert(t.to_string(), weight);
                }
                _ => return Err(format!("unknown TRES '{name}'; use CPU, Mem, Node, GRES/gpu or GRES/gpu:<type>")),
            },
        }
    }
    Ok(w)
}

/// Turns a toml error into `line N: key `...`: reason`.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!("line {line_no}: `{line}`: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
ledger = "/tmp/x.db"
[policy]
minimum_charge = "0.01"
exempt_partitions = ["free"]
[partitions.debug.rates]
cpu = 0.02
mem_gb = "0.005"
"gres/gpu:a100" = 3
[partitions.batch.billing]
unit_hour = 0.01
weights = "CPU=1.0,Mem=0.25G,GRES/gpu=2.0"
[partitions.aws.aws]
instance_type = "c5.2xlarge"
market = "spot"
node_hour = 0.34
"#;

    #[test]
    fn parses_a_good_file() {
        let c = Config::parse(GOOD, "asbb.toml").unwrap();
        assert_eq!(c.partitions.len(), 3);
        match &c.partitions["debug"].pricing {
            Pricing::Tres(r) => {
                assert_eq!(r.cpu.micros(), 20_000);
                assert_eq!(r.mem_gb.micros(), 5_000);
                assert_eq!(r.gpu_typed["a100"].micros(), 3_000_000);
            }
            p => panic!("{p:?}"),
        }
        match &c.partitions["batch"].pricing {
            Pricing::Billing { weights, .. } => assert_eq!(weights.mem_gb_micro, 250_000),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn refuses_unknown_keys_with_the_line() {
        let e = Config::parse("[policy]\nfoo = 1\n", "a.toml").unwrap_err();
        assert!(e.to_string().starts_with("a.toml: line 2: `foo = 1`: unknown field `foo`"), "{e}");
    }

    #[test]
    fn refuses_negative_rates() {
        let e = Config::parse("[partitions.p.rates]\ncpu = -1\n", "a.toml").unwrap_err();
        assert_eq!(e.to_string(), "a.toml: line 2: `cpu = -1`: amount '-1' is negative; amounts must be zero or more");
    }

    #[test]
    fn refuses_api_callers_named_like_the_import() {
        let token = |name: &str| {
            format!(
                "[api]\n[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"integration\"\n",
                "0".repeat(64)
            )
        };
        assert!(Config::parse(&token("aws-importer"), "a.toml").is_ok());
        for name in ["aws-import", "AWS-Import"] {
            let e = Config::parse(&token(name), "a.toml").unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("a.toml: api.tokens: the name '{name}' is reserved: cost updates carry their caller's name as source, and 'aws-import' is the source of `asbb-admin integration import-costs`; name the token after its client")
            );
        }
        let e = Config::parse("[api]\n[[api.peers]]\nuser = \"aws-import\"\nrole = \"integration\"\n", "a.toml")
            .unwrap_err();
        assert!(e.to_string().starts_with("a.toml: api.peers: the user 'aws-import' is reserved"), "{e}");
    }

    #[test]
    fn refuses_a_partition_without_rates() {
        let e = Config::parse("[partitions.gpu]\ndefault_time_limit_min = 5\n", "a.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.toml: partitions.gpu: partition has no rates; give one of [partitions.gpu.rates], [partitions.gpu.billing] or [partitions.gpu.aws]"
        );
        let e = Config::parse("[partitions.gpu.rates]\nfoo = 1\n", "a.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.toml: partitions.gpu.rates.foo: unknown resource; use cpu, mem_gb, node, gres/gpu or gres/gpu:<type>"
        );
    }
}
