// SPDX-License-Identifier: GPL-2.0-or-later
//! The grant statement as a grant manager files it: fixed-width text
//! (`agency-required`), CSV, JSON (decimal strings with two decimals) and one
//! self-contained HTML page (inline CSS, an inline SVG burn-down chart, nothing fetched).
//! Every renderer reads the same `GrantReport`; none computes money of its own.

use crate::core::decisions::{format_date, format_time, DAY_S};
use crate::core::grants::report::{
    format_bps, format_ratio, Amounts, Exhaustion, GrantReport, Line, Projection, Section, SpendStatus,
};
use crate::core::grants::{format_rate, GrantDetail};
use crate::core::money::Money;
use crate::core::usage::{self, UsageFigures, UsageReport};
use std::fmt::Write as _;

/// The report formats `grant report --format` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    AgencyRequired,
    Csv,
    Json,
    Html,
}

pub fn render(report: &GrantReport, format: ReportFormat) -> String {
    match format {
        ReportFormat::AgencyRequired => agency_text(report),
        ReportFormat::Csv => csv(report),
        ReportFormat::Json => json(report),
        ReportFormat::Html => html(report),
    }
}

// ----- shared phrases -------------------------------------------------------------------

/// Last day of an exclusive end.
fn last_day(until: i64) -> String {
    format_date(until - DAY_S)
}

fn dates(from: i64, until: i64) -> String {
    format!("{} to {}", format_date(from), last_day(until))
}

/// `2026-08-15 12:00:00 UTC`
fn stamp(t: i64) -> String {
    format!("{} UTC", format_time(t))
}

/// The status line: `underspending (spent/elapsed 0.38 < 0.75)`.
pub fn status_text(p: &Projection) -> String {
    let (under, over) = (format_ratio(p.underspend_ratio_ppm), format_ratio(p.overspend_ratio_ppm));
    match (p.status, p.ratio_ppm) {
        (SpendStatus::Underspending, Some(r)) => format!("underspending (spent/elapsed {} < {under})", format_ratio(r)),
        (SpendStatus::Overspending, Some(r)) => format!("overspending (spent/elapsed {} > {over})", format_ratio(r)),
        (SpendStatus::OnTrack, Some(r)) => {
            format!("on track (spent/elapsed {}, within {under}-{over})", format_ratio(r))
        }
        (s, _) => s.label().to_string(),
    }
}

/// `$3.35 per day`.
pub fn burn_text(p: &Projection) -> String {
    format!("{} per day", p.burn_rate_per_day)
}

/// The window the burn rate was measured over: `2026-07-16 to 2026-08-14 (30 days): $100.58`.
pub fn window_text(p: &Projection) -> String {
    if p.effective_days == 0 {
        return "no complete day yet".to_string();
    }
    let days = if p.effective_days < p.window_days as i64 {
        format!("{} of {} days, since the start", p.effective_days, p.window_days)
    } else {
        format!("{} day{}", p.effective_days, if p.effective_days == 1 { "" } else { "s" })
    };
    format!("{} to {} ({days}): {}", format_date(p.window_from), last_day(p.window_until), p.window_spend)
}

/// `2030-06-21`, or why there is no date.
pub fn exhaustion_text(p: &Projection) -> String {
    match p.exhaustion {
        Exhaustion::On(t) => format_date(t),
        Exhaustion::NoSpending => "none (nothing spent in the window)".to_string(),
        Exhaustion::Exhausted => "already exhausted".to_string(),
        Exhaustion::Closed => "none (closed)".to_string(),
    }
}

/// How the projection was made.
pub fn method_text(p: &Projection) -> String {
    format!("linear: remaining / burn rate, from {}", format_date(p.as_of))
}

/// The ALERT sentence, when exhaustion comes before the end.
pub fn alert_text(p: &Projection, what: &str) -> Option<String> {
    if !p.alert {
        return None;
    }
    let end = p.end.map(last_day).unwrap_or_default();
    Some(match p.exhaustion {
        Exhaustion::On(t) => {
            format!("ALERT: at the current burn rate {what} runs out on {}, before its end on {end}", format_date(t))
        }
        _ => format!("ALERT: {what} is exhausted before its end on {end}"),
    })
}

fn holds_text(r: &GrantReport) -> String {
    if r.open_holds.is_empty() {
        return "none (the grant funds no account)".to_string();
    }
    r.open_holds
        .iter()
        .map(|h| format!("{} on {} ({} job{})", h.amount, h.account, h.jobs, if h.jobs == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The method notes, one sentence each.
fn notes(r: &GrantReport) -> Vec<String> {
    vec![
        "Direct cost is what was charged to the grant's allocations, net of refunds and adjustments.".to_string(),
        format!(
            "Indirect (F&A) cost is direct cost x {}, rounded half up to the micro-dollar on each line; \
             totals are computed from unrounded amounts, so a total may differ from the sum of its lines by a cent.",
            format_rate(r.grant.indirect_rate_ppm)
        ),
        "A cost belongs to the budget period whose allocation it was posted to; date ranges, the burn rate \
         and the daily series use the date it was posted."
            .to_string(),
        "Resource categories split each cost in proportion to the hourly rates of its resources \
         (node rates count as CPU; AWS partitions are AWS burst)."
            .to_string(),
        "The burn rate is the cost posted in the trailing window of complete days divided by its days; \
         the projected exhaustion is linear at that rate."
            .to_string(),
        "Amounts are dollars, rounded to cents half away from zero.".to_string(),
    ]
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

// ----- agency-required: fixed-width text -------------------------------------------------

struct Cols {
    label: usize,
    num: usize,
}

fn cols_for(r: &GrantReport) -> Cols {
    let all_sections = r.sections.iter().chain(std::iter::once(&r.cumulative));
    let mut label = 30;
    let mut num = 16;
    for s in all_sections {
        for l in s.by_partition.iter().chain(&s.by_category).chain(&s.by_account).chain(&s.by_user) {
            label = label.max(l.name.chars().count() + 6);
            num = num.max(l.amounts.total.to_string().len() + 2).max(l.amounts.direct.to_string().len() + 2);
        }
        for a in [s.budget, Some(s.expended), s.remaining].into_iter().flatten() {
            num = num.max(a.total.to_string().len() + 2).max(a.direct.to_string().len() + 2);
        }
    }
    Cols { label, num }
}

fn row(out: &mut String, c: &Cols, indent: usize, label: &str, a: &Amounts) {
    let _ = writeln!(
        out,
        "{:indent$}{:<w$}{:>n$}{:>n$}{:>n$}",
        "",
        label,
        a.direct,
        a.indirect,
        a.total,
        indent = indent,
        w = c.label - indent,
        n = c.num
    );
}

fn text_section(out: &mut String, c: &Cols, s: &Section, heading: &str, with_people: bool) {
    let width = c.label + 3 * c.num;
    let _ = writeln!(out, "{heading}");
    let _ = writeln!(out, "{}", "-".repeat(width));
    let _ = writeln!(out, "{:<w$}{:>n$}{:>n$}{:>n$}", "", "DIRECT", "INDIRECT", "TOTAL", w = c.label, n = c.num);
    if let Some(b) = &s.budget {
        row(out, c, 2, "Budget", b);
    }
    row(out, c, 2, "Expended", &s.expended);
    if let Some(rem) = &s.remaining {
        row(out, c, 2, "Remaining", rem);
    }
    let mut block = |title: &str, lines: &[Line]| {
        let _ = writeln!(out, "  {title}");
        if lines.is_empty() {
            let _ = writeln!(out, "    (none)");
        }
        for l in lines {
            row(out, c, 4, &l.name, &l.amounts);
        }
    };
    block("Expended by partition", &s.by_partition);
    block("Expended by resource category", &s.by_category);
    if with_people {
        block("Expended by account", &s.by_account);
        block("Expended by user", &s.by_user);
    }
    let _ = writeln!(out);
}

fn agency_text(r: &GrantReport) -> String {
    let g = &r.grant;
    let p = &r.projection;
    let c = cols_for(r);
    let width = c.label + 3 * c.num;
    let mut out = String::new();
    let title = "GRANT EXPENDITURE STATEMENT";
    let _ = writeln!(out, "{title}");
    let _ = writeln!(out, "{}", "=".repeat(width));
    let field = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "{:<26}{v}", format!("{k}:"));
    };
    field(&mut out, "Grant number", &g.number);
    field(&mut out, "Funding agency", &g.agency);
    field(&mut out, "Program", g.program.as_deref().unwrap_or("-"));
    field(&mut out, "Federal award ID", g.federal_award_id.as_deref().unwrap_or("-"));
    field(&mut out, "Principal investigator", &g.pi);
    field(&mut out, "Co-investigators", &if g.co_pis.is_empty() { "-".to_string() } else { g.co_pis.join("; ") });
    field(&mut out, "Budget account", g.account.as_deref().unwrap_or("(none)"));
    field(&mut out, "Grant dates", &dates(g.start, g.end));
    field(&mut out, "Total award", &g.award.to_string());
    field(&mut out, "Indirect cost rate", &format!("{} of direct cost", format_rate(g.indirect_rate_ppm)));
    field(
        &mut out,
        "Status",
        &match g.closed_at {
            Some(t) => format!("{} on {}", g.status, format_date(t)),
            None => g.status.clone(),
        },
    );
    field(&mut out, "Statement covers", &format!("{}, through {}", r.scope, stamp(p.as_of)));
    field(&mut out, "Prepared", &stamp(r.generated_at));
    let _ = writeln!(out);
    for s in &r.sections {
        let heading = match s.period_no {
            Some(n) => format!("BUDGET PERIOD {n}: {}", dates(s.from, s.until)),
            None => s.title.to_uppercase(),
        };
        text_section(&mut out, &c, s, &heading, false);
    }
    let cu = &r.cumulative;
    text_section(&mut out, &c, cu, &format!("CUMULATIVE: {} to {}", format_date(cu.from), format_date(p.as_of)), true);
    let _ = writeln!(out, "BURN RATE AND PROJECTION");
    let _ = writeln!(out, "{}", "-".repeat(width));
    let kv = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "  {:<28}{v}", format!("{k}:"));
    };
    kv(&mut out, "Percent of award spent", &format_bps(p.percent_spent_bps));
    kv(&mut out, "Percent of time elapsed", &p.percent_elapsed_bps.map(format_bps).unwrap_or_else(|| "-".into()));
    kv(&mut out, "Spending status", &status_text(p));
    kv(&mut out, "Burn rate", &burn_text(p));
    kv(&mut out, "Burn rate window", &window_text(p));
    kv(&mut out, "Projected exhaustion", &exhaustion_text(p));
    kv(&mut out, "Projection method", &method_text(p));
    kv(&mut out, "Award remaining", &p.remaining.to_string());
    kv(&mut out, "Open holds (not yet cost)", &holds_text(r));
    if let Some(a) = alert_text(p, &format!("grant {}", g.number)) {
        let _ = writeln!(out);
        for l in wrap(&a, width) {
            let _ = writeln!(out, "{l}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "NOTES");
    let _ = writeln!(out, "{}", "-".repeat(width));
    for n in notes(r) {
        for (i, l) in wrap(&n, width - 4).iter().enumerate() {
            let _ = writeln!(out, "{}{l}", if i == 0 { "  - " } else { "    " });
        }
    }
    out
}

// ----- CSV -----------------------------------------------------------------------------

/// A grant as JSON (`asbb-admin grant show/list`, `GET /api/v1/grants`, `asbb grants`).
pub fn grant_json(d: &GrantDetail) -> serde_json::Value {
    let g = &d.grant;
    serde_json::json!({
        "number": g.number,
        "status": g.status,
        "agency": g.agency,
        "program": g.program,
        "federal_award_id": g.federal_award_id,
        "principal_investigator": g.pi,
        "pi_email": g.pi_email,
        "co_investigators": g.co_pis,
        "account": g.account,
        "start": format_date(g.start),
        "end": format_date(g.end - DAY_S),
        "award": g.award.to_decimal_string(),
        "indirect_rate": format_rate(g.indirect_rate_ppm).trim_end_matches('%').to_string(),
        "direct_budget": d.direct_budget().to_decimal_string(),
        "direct_spent": d.direct_spent().to_decimal_string(),
        "indirect_spent": d.indirect_spent().to_decimal_string(),
        "spent": d.spent().to_decimal_string(),
        "remaining": d.remaining().to_decimal_string(),
        "closed_at": g.closed_at.map(format_time),
        "periods": d.periods.iter().map(|p| serde_json::json!({
            "period": p.period_no,
            "start": format_date(p.start),
            "end": format_date(p.end - DAY_S),
            "award": p.amount.to_decimal_string(),
            "direct_budget": p.direct_budget.to_decimal_string(),
            "direct_spent": p.direct_spent.to_decimal_string(),
            "allocation_id": p.allocation_id,
        })).collect::<Vec<_>>(),
    })
}

/// A table printed as aligned text or CSV.
pub struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Table {
        Table { headers, rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn to_text(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(c);
                } else {
                    out.push_str(&format!("{c:<w$}  ", w = widths[i]));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut out =
            self.headers.iter().map(|h| csv_cell(&h.to_ascii_lowercase())).collect::<Vec<_>>().join(",") + "\n";
        for row in &self.rows {
            out.push_str(&(row.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",") + "\n"));
        }
        out
    }
}

/// One CSV cell, as every CSV asbb writes has it. A cell a spreadsheet would take for a
/// formula (it starts with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a
/// leading `'`, as OWASP advises against CSV injection, unless it is a plain number
/// (`-0.50` stays a number) or the lone `-` tables print for "none". A cell with a
/// comma, quote or line break is quoted.
pub fn csv_cell(c: &str) -> String {
    let formula = c.starts_with(['=', '+', '-', '@', '\t', '\r']) && c != "-" && !is_plain_number(c);
    let c = if formula { format!("'{c}") } else { c.to_string() };
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c
    }
}

/// `^-?[0-9]+(\.[0-9]+)?$`
fn is_plain_number(c: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = c.strip_prefix('-').unwrap_or(c);
    match unsigned.split_once('.') {
        Some((whole, frac)) => digits(whole) && digits(frac),
        None => digits(unsigned),
    }
}

fn csv(r: &GrantReport) -> String {
    let mut out = String::from("grant,section,from,to,breakdown,item,direct,indirect,total\n");
    let mut put = |s: &Section, breakdown: &str, item: &str, a: &Amounts| {
        let cells = [
            r.grant.number.clone(),
            s.title.clone(),
            format_date(s.from),
            last_day(s.until),
            breakdown.to_string(),
            item.to_string(),
            a.direct.to_decimal_string(),
            a.indirect.to_decimal_string(),
            a.total.to_decimal_string(),
        ];
        out.push_str(&(cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",") + "\n"));
    };
    for s in r.sections.iter().chain(std::iter::once(&r.cumulative)) {
        if let Some(b) = &s.budget {
            put(s, "summary", "budget", b);
        }
        put(s, "summary", "expended", &s.expended);
        if let Some(rem) = &s.remaining {
            put(s, "summary", "remaining", rem);
        }
        for (breakdown, lines) in [
            ("partition", &s.by_partition),
            ("category", &s.by_category),
            ("account", &s.by_account),
            ("user", &s.by_user),
        ] {
            for l in lines {
                put(s, breakdown, &l.name, &l.amounts);
            }
        }
    }
    out
}

// ----- JSON ------------------------------------------------------------------------------

fn amounts_json(a: &Amounts) -> serde_json::Value {
    serde_json::json!({
        "direct": a.direct.to_decimal_string(),
        "indirect": a.indirect.to_decimal_string(),
        "total": a.total.to_decimal_string(),
    })
}

fn lines_json(lines: &[Line]) -> serde_json::Value {
    lines
        .iter()
        .map(|l| {
            let mut v = amounts_json(&l.amounts);
            v["name"] = serde_json::Value::String(l.name.clone());
            // name first
            let mut o = serde_json::Map::new();
            o.insert("name".into(), v["name"].clone());
            for k in ["direct", "indirect", "total"] {
                o.insert(k.into(), v[k].clone());
            }
            serde_json::Value::Object(o)
        })
        .collect()
}

fn section_json(s: &Section) -> serde_json::Value {
    serde_json::json!({
        "title": s.title,
        "period": s.period_no,
        "from": format_date(s.from),
        "to": last_day(s.until),
        "budget": s.budget.as_ref().map(amounts_json),
        "expended": amounts_json(&s.expended),
        "remaining": s.remaining.as_ref().map(amounts_json),
        "by_partition": lines_json(&s.by_partition),
        "by_category": lines_json(&s.by_category),
        "by_account": lines_json(&s.by_account),
        "by_user": lines_json(&s.by_user),
    })
}

/// Percent as a decimal string: `56.71`.
fn pct(bps: i64) -> String {
    format_bps(bps).trim_end_matches('%').to_string()
}

/// The projection as JSON (shared with `forecast --format json`).
pub fn projection_json(p: &Projection) -> serde_json::Value {
    serde_json::json!({
        "as_of": format_time(p.as_of),
        "start": format_date(p.start),
        "end": p.end.map(last_day),
        "budget": p.budget.to_decimal_string(),
        "spent": p.spent.to_decimal_string(),
        "remaining": p.remaining.to_decimal_string(),
        "percent_spent": pct(p.percent_spent_bps),
        "percent_elapsed": p.percent_elapsed_bps.map(pct),
        "spent_elapsed_ratio": p.ratio_ppm.map(format_ratio),
        "status": p.status.label(),
        "overspend_ratio": format_ratio(p.overspend_ratio_ppm),
        "underspend_ratio": format_ratio(p.underspend_ratio_ppm),
        "window_days": p.effective_days,
        "window_from": format_date(p.window_from),
        "window_to": last_day(p.window_until),
        "window_spend": p.window_spend.to_decimal_string(),
        "burn_rate_per_day": p.burn_rate_per_day.to_decimal_string(),
        "projected_exhaustion": match p.exhaustion { Exhaustion::On(t) => Some(format_date(t)), _ => None },
        "exhaustion": match p.exhaustion {
            Exhaustion::On(_) => "projected",
            Exhaustion::NoSpending => "no_spending",
            Exhaustion::Exhausted => "exhausted",
            Exhaustion::Closed => "closed",
        },
        "method": "linear: remaining / (total cost posted in the window / window days)",
        "alert": p.alert,
        "daily": p.daily.iter().map(|d| serde_json::json!({
            "date": format_date(d.day),
            "direct": d.direct.to_decimal_string(),
            "total": d.total.to_decimal_string(),
        })).collect::<Vec<_>>(),
    })
}

fn json(r: &GrantReport) -> String {
    let g = &r.grant;
    let v = serde_json::json!({
        "grant": {
            "number": g.number,
            "agency": g.agency,
            "program": g.program,
            "federal_award_id": g.federal_award_id,
            "principal_investigator": g.pi,
        "pi_email": g.pi_email,
            "co_investigators": g.co_pis,
            "account": g.account,
            "start": format_date(g.start),
            "end": last_day(g.end),
            "award": g.award.to_decimal_string(),
            "indirect_rate": format_rate(g.indirect_rate_ppm).trim_end_matches('%').to_string(),
            "status": g.status,
            "closed_at": g.closed_at.map(format_time),
        },
        "scope": r.scope,
        "generated_at": format_time(r.generated_at),
        "periods": r.sections.iter().map(section_json).collect::<Vec<_>>(),
        "cumulative": section_json(&r.cumulative),
        "forecast": projection_json(&r.projection),
        "open_holds": r.open_holds.iter().map(|h| serde_json::json!({
            "account": h.account, "amount": h.amount.to_decimal_string(), "jobs": h.jobs,
        })).collect::<Vec<_>>(),
        "curve": r.curve.iter().map(|c| serde_json::json!({
            "date": format_date(c.day), "cumulative_total": c.cumulative_total.to_decimal_string(),
        })).collect::<Vec<_>>(),
        "notes": notes(r).join(" "),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

// ----- HTML ------------------------------------------------------------------------------

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
body { font-family: 'DejaVu Sans', Arial, Helvetica, sans-serif; color: #1b1b1b; margin: 24px 32px; background: #ffffff; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 16px; margin: 24px 0 6px 0; border-bottom: 1px solid #c8c8c8; padding-bottom: 3px; }
h3 { font-size: 13px; margin: 12px 0 4px 0; color: #444444; }
.sub { color: #555555; font-size: 13px; margin-bottom: 12px; }
table { border-collapse: collapse; font-size: 12px; }
td, th { padding: 2px 10px; }
th { text-align: left; background: #eef1f5; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.info td:first-child { color: #555555; padding-left: 0; }
tr.strong td { font-weight: bold; }
.cards { display: flex; gap: 12px; margin: 12px 0; flex-wrap: wrap; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.card .k { font-size: 11px; color: #555555; }
.card .v { font-size: 17px; font-weight: bold; }
.alert { background: #fdecea; border: 1px solid #d62728; color: #8a1c1c; padding: 8px 12px; border-radius: 6px; margin: 12px 0; font-weight: bold; }
.notes { font-size: 11px; color: #555555; }
";

fn amounts_cells(a: &Amounts) -> String {
    format!(
        "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
        esc(&a.direct.to_string()),
        esc(&a.indirect.to_string()),
        esc(&a.total.to_string())
    )
}

fn html_section(out: &mut String, s: &Section, heading: &str, with_people: bool) {
    let _ = writeln!(out, "<h2>{}</h2>", esc(heading));
    let _ = writeln!(
        out,
        "<table><tr><th></th><th class=\"n\">Direct</th><th class=\"n\">Indirect</th><th class=\"n\">Total</th></tr>"
    );
    if let Some(b) = &s.budget {
        let _ = writeln!(out, "<tr><td>Budget</td>{}</tr>", amounts_cells(b));
    }
    let _ = writeln!(out, "<tr class=\"strong\"><td>Expended</td>{}</tr>", amounts_cells(&s.expended));
    if let Some(r) = &s.remaining {
        let _ = writeln!(out, "<tr><td>Remaining</td>{}</tr>", amounts_cells(r));
    }
    let mut blocks = vec![("By partition", &s.by_partition), ("By resource category", &s.by_category)];
    if with_people {
        blocks.push(("By account", &s.by_account));
        blocks.push(("By user", &s.by_user));
    }
    for (title, lines) in blocks {
        let _ = writeln!(out, "<tr><th colspan=\"4\">{}</th></tr>", esc(title));
        for l in lines {
            let _ = writeln!(out, "<tr><td>{}</td>{}</tr>", esc(&l.name), amounts_cells(&l.amounts));
        }
    }
    let _ = writeln!(out, "</table>");
}

/// Chart geometry.
const SVG_W: f64 = 960.0;
const SVG_H: f64 = 380.0;
const LEFT: f64 = 100.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 56.0;
pub const ACTUAL_COLOUR: &str = "#1f5fbf";
pub const PLAN_COLOUR: &str = "#7f7f7f";
pub const PROJECTION_COLOUR: &str = "#d62728";

/// Cumulative spend vs the straight-line plan vs the linear projection, as inline SVG.
pub fn burn_down_svg(r: &GrantReport) -> String {
    let g = &r.grant;
    let p = &r.projection;
    let pw = SVG_W - LEFT - RIGHT;
    let ph = SVG_H - TOP - BOTTOM;
    let span = (g.end - g.start).max(1) as f64;
    let award = g.award.micros().max(1) as f64;
    let x = |t: i64| LEFT + ((t.clamp(g.start, g.end) - g.start) as f64 / span) * pw;
    let y = |m: i64| TOP + ph - (m.clamp(0, g.award.micros()) as f64 / award) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_W}\" height=\"{SVG_H}\" viewBox=\"0 0 {SVG_W} {SVG_H}\" role=\"img\" aria-label=\"Burn-down chart\" font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(s, "<rect x=\"0\" y=\"0\" width=\"{SVG_W}\" height=\"{SVG_H}\" fill=\"#ffffff\"/>");
    // Y grid and labels: 0, 25, 50, 75, 100% of the award.
    for q in 0..=4i64 {
        let m = (g.award.micros() as i128 * q as i128 / 4) as i64;
        let yy = y(m);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e3e3e3\" stroke-width=\"1\"/>",
            LEFT + pw
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#333333\">{}</text>",
            LEFT - 6.0,
            yy + 4.0,
            esc(&Money::from_micros(m).to_string())
        );
    }
    // X ticks: each period's start and the grant's last day.
    let mut ticks: Vec<i64> = r.periods.iter().map(|p| p.start).collect();
    if ticks.is_empty() {
        ticks.push(g.start);
    }
    ticks.push(g.end);
    for (i, &t) in ticks.iter().enumerate() {
        let xx = x(t);
        let label = if i + 1 == ticks.len() { last_day(t) } else { format_date(t) };
        let anchor = if i + 1 == ticks.len() {
            "end"
        } else if i == 0 {
            "start"
        } else {
            "middle"
        };
        let _ = writeln!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{TOP:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#e3e3e3\" stroke-width=\"1\"/>",
            TOP + ph
        );
        let _ = writeln!(
            s,
            "<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"#333333\">{}</text>",
            TOP + ph + 16.0,
            esc(&label)
        );
    }
    // Axes and their titles.
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT:.1}\" y1=\"{TOP:.1}\" x2=\"{LEFT:.1}\" y2=\"{:.1}\" stroke=\"#333333\" stroke-width=\"1.5\"/>",
        TOP + ph
    );
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333333\" stroke-width=\"1.5\"/>",
        TOP + ph,
        LEFT + pw,
        TOP + ph
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333333\" font-size=\"12\">Date (UTC)</text>",
        LEFT + pw / 2.0,
        SVG_H - 10.0
    );
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333333\" font-size=\"12\" transform=\"rotate(-90 16 {:.1})\">Cumulative cost, direct + indirect</text>",
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Plan: straight line from nothing at the start to the award at the end.
    let _ = writeln!(
        s,
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{PLAN_COLOUR}\" stroke-width=\"2.5\" stroke-dasharray=\"8 5\"/>",
        x(g.start),
        y(0),
        x(g.end),
        y(g.award.micros())
    );
    // Actual: cumulative spend, rising over each day that had costs.
    let mut pts = vec![format!("{:.1},{:.1}", x(g.start), y(0))];
    let mut last = 0i64;
    for c in r.curve.iter().filter(|c| c.day < p.as_of) {
        pts.push(format!("{:.1},{:.1}", x(c.day), y(last)));
        last = c.cumulative_total.micros();
        pts.push(format!("{:.1},{:.1}", x((c.day + DAY_S).min(p.as_of)), y(last)));
    }
    pts.push(format!("{:.1},{:.1}", x(p.as_of), y(last)));
    let _ = writeln!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{ACTUAL_COLOUR}\" stroke-width=\"3.5\" stroke-linejoin=\"round\"/>",
        pts.join(" ")
    );
    // Projection: linear from today at the burn rate, to exhaustion or the end.
    let spent = p.spent.micros();
    let projection_end = match p.exhaustion {
        Exhaustion::On(t) if t < g.end => Some((t, g.award.micros())),
        Exhaustion::On(_) | Exhaustion::NoSpending => {
            let days = (g.end - p.as_of) as i128;
            let rise = p.window_spend.micros() as i128 * days / (p.effective_days.max(1) as i128 * DAY_S as i128);
            Some((g.end, (spent as i128 + rise).min(g.award.micros() as i128) as i64))
        }
        Exhaustion::Exhausted | Exhaustion::Closed => None,
    };
    if let Some((t, m)) = projection_end.filter(|_| p.as_of < g.end) {
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{PROJECTION_COLOUR}\" stroke-width=\"3\" stroke-dasharray=\"3 4\"/>",
            x(p.as_of),
            y(spent),
            x(t),
            y(m)
        );
    }
    // Today.
    let _ = writeln!(
        s,
        "<line x1=\"{0:.1}\" y1=\"{TOP:.1}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#333333\" stroke-width=\"1\" stroke-dasharray=\"2 3\"/>",
        x(p.as_of),
        TOP + ph
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333333\">as of {}</text>",
        x(p.as_of),
        TOP - 8.0,
        esc(&format_date(p.as_of))
    );
    // Legend.
    let lx = LEFT + 16.0;
    for (i, (colour, dash, label)) in [
        (ACTUAL_COLOUR, "", "Cumulative cost"),
        (PLAN_COLOUR, "8 5", "Straight-line plan"),
        (PROJECTION_COLOUR, "3 4", "Projection at current burn rate"),
    ]
    .iter()
    .enumerate()
    {
        let ly = TOP + 14.0 + i as f64 * 18.0;
        let dash_attr = if dash.is_empty() { String::new() } else { format!(" stroke-dasharray=\"{dash}\"") };
        let _ = writeln!(
            s,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"3\"{dash_attr}/>",
            lx + 28.0
        );
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1b1b1b\">{label}</text>", lx + 36.0, ly + 4.0);
    }
    s.push_str("</svg>\n");
    s
}

fn html(r: &GrantReport) -> String {
    let g = &r.grant;
    let p = &r.projection;
    let mut out = String::new();
    let _ = writeln!(out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">");
    let _ = writeln!(out, "<title>Grant expenditure statement {}</title>", esc(&g.number));
    let _ = writeln!(out, "<style>{CSS}</style>\n</head>\n<body>");
    let _ = writeln!(out, "<h1>Grant expenditure statement: {}</h1>", esc(&g.number));
    let _ = writeln!(
        out,
        "<div class=\"sub\">{} &middot; costs posted through {} &middot; prepared {}</div>",
        esc(&r.scope),
        esc(&stamp(p.as_of)),
        esc(&stamp(r.generated_at))
    );
    let co = if g.co_pis.is_empty() { "-".to_string() } else { g.co_pis.join("; ") };
    let status = match g.closed_at {
        Some(t) => format!("{} on {}", g.status, format_date(t)),
        None => g.status.clone(),
    };
    let _ = writeln!(out, "<table class=\"info\">");
    for (k, v) in [
        ("Funding agency", g.agency.clone()),
        ("Program", g.program.clone().unwrap_or_else(|| "-".into())),
        ("Federal award ID", g.federal_award_id.clone().unwrap_or_else(|| "-".into())),
        ("Principal investigator", g.pi.clone()),
        ("Co-investigators", co),
        ("Budget account", g.account.clone().unwrap_or_else(|| "(none)".into())),
        ("Grant dates", dates(g.start, g.end)),
        ("Total award", g.award.to_string()),
        ("Indirect cost rate", format!("{} of direct cost", format_rate(g.indirect_rate_ppm))),
        ("Status", status),
    ] {
        let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
    }
    let _ = writeln!(out, "</table>");
    let _ = writeln!(out, "<div class=\"cards\">");
    for (k, v) in [
        ("Spent (direct + indirect)", p.spent.to_string()),
        ("Award remaining", p.remaining.to_string()),
        ("Percent of award spent", format_bps(p.percent_spent_bps)),
        ("Percent of time elapsed", p.percent_elapsed_bps.map(format_bps).unwrap_or_else(|| "-".into())),
        ("Status", p.status.label().to_string()),
        ("Burn rate per day", p.burn_rate_per_day.to_string()),
        (
            "Projected exhaustion",
            match p.exhaustion {
                Exhaustion::On(t) => format_date(t),
                Exhaustion::NoSpending => "none".into(),
                Exhaustion::Exhausted => "exhausted".into(),
                Exhaustion::Closed => "closed".into(),
            },
        ),
    ] {
        let _ = writeln!(
            out,
            "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div></div>",
            esc(k),
            esc(&v)
        );
    }
    let _ = writeln!(out, "</div>");
    if let Some(a) = alert_text(p, &format!("grant {}", g.number)) {
        let _ = writeln!(out, "<div class=\"alert\">{}</div>", esc(&a));
    }
    let _ = writeln!(out, "<h2>Burn-down</h2>");
    out.push_str(&burn_down_svg(r));
    let _ = writeln!(out, "<table class=\"info\">");
    for (k, v) in [
        ("Spending status", status_text(p)),
        ("Burn rate", burn_text(p)),
        ("Burn rate window", window_text(p)),
        ("Projected exhaustion", exhaustion_text(p)),
        ("Projection method", method_text(p)),
        ("Open holds (not yet cost)", holds_text(r)),
    ] {
        let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
    }
    let _ = writeln!(out, "</table>");
    for s in &r.sections {
        let heading = match s.period_no {
            Some(n) => format!("Budget period {n}: {}", dates(s.from, s.until)),
            None => s.title.clone(),
        };
        html_section(&mut out, s, &heading, false);
    }
    let cu = &r.cumulative;
    html_section(&mut out, cu, &format!("Cumulative: {} to {}", format_date(cu.from), format_date(p.as_of)), true);
    let _ = writeln!(out, "<h2>Notes</h2>\n<p class=\"notes\">{}</p>", esc(&notes(r).join(" ")));
    let _ = writeln!(out, "</body>\n</html>");
    out
}

// ----- usage (chargeback) ---------------------------------------------------------------

/// The usage report as a table: one column per `--by` key, then the figures, then a
/// total line. Amounts are dollars with cents (text) or exact (csv).
pub fn usage_table(r: &UsageReport, exact: bool) -> Table {
    let mut headers: Vec<&'static str> = r.by.iter().map(|k| k.name()).collect();
    headers.extend(["cost", "charges", "refunds", "adjustments", "jobs", "cpu_hours", "gpu_hours"]);
    let mut t = Table::new(headers.into_iter().map(|h| if exact { h } else { upper(h) }).collect());
    let money = |m: Money| if exact { m.to_exact_string() } else { m.to_string() };
    let figures = |f: &UsageFigures| {
        vec![
            money(f.cost),
            money(f.charges),
            money(f.refunds),
            money(f.adjustments),
            f.jobs.to_string(),
            usage::hours_text(f.cpu_seconds),
            usage::hours_text(f.gpu_seconds),
        ]
    };
    for row in &r.rows {
        let mut cells = row.group.clone();
        cells.extend(figures(&row.figures));
        t.push(cells);
    }
    let mut total = vec!["TOTAL".to_string()];
    total.extend(std::iter::repeat(String::new()).take(r.by.len() - 1));
    total.extend(figures(&r.total));
    t.push(total);
    t
}

/// Column names as the text table shows them.
fn upper(h: &'static str) -> &'static str {
    match h {
        "account" => "ACCOUNT",
        "user" => "USER",
        "project" => "PROJECT",
        "domain" => "DOMAIN",
        "grant" => "GRANT",
        "partition" => "PARTITION",
        "qos" => "QOS",
        "cost" => "COST",
        "charges" => "CHARGES",
        "refunds" => "REFUNDS",
        "adjustments" => "ADJUSTMENTS",
        "jobs" => "JOBS",
        "cpu_hours" => "CPU_HOURS",
        "gpu_hours" => "GPU_HOURS",
        other => other,
    }
}

/// The usage report in a format: a header line and the table (text), the table
/// (csv), or an object with the window, the grouping, rows and the total (json).
pub fn render_usage(r: &UsageReport, format: UsageFormat) -> String {
    match format {
        UsageFormat::Text => {
            format!(
                "Usage {} to {} by {}\n\n{}",
                format_date(r.from),
                format_date(r.until - DAY_S),
                r.by.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
                usage_table(r, false).to_text()
            )
        }
        UsageFormat::Csv => usage_table(r, true).to_csv(),
        UsageFormat::Json => {
            let figures = |f: &UsageFigures| {
                serde_json::json!({
                    "cost": f.cost.to_exact_string(),
                    "charges": f.charges.to_exact_string(),
                    "refunds": f.refunds.to_exact_string(),
                    "adjustments": f.adjustments.to_exact_string(),
                    "jobs": f.jobs,
                    "cpu_hours": usage::hours_text(f.cpu_seconds),
                    "gpu_hours": usage::hours_text(f.gpu_seconds),
                })
            };
            let rows: Vec<serde_json::Value> = r
                .rows
                .iter()
                .map(|row| {
                    let mut v = figures(&row.figures);
                    for (k, g) in r.by.iter().zip(&row.group) {
                        v[k.name()] = serde_json::Value::String(g.clone());
                    }
                    v
                })
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({
                "from": format_date(r.from),
                "to": format_date(r.until - DAY_S),
                "by": r.by.iter().map(|k| k.name()).collect::<Vec<_>>(),
                "rows": rows,
                "total": figures(&r.total),
            }))
            .unwrap_or_default()
                + "\n"
        }
    }
}

/// How a usage report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFormat {
    Text,
    Csv,
    Json,
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_spreadsheets_would_run_are_neutralised() {
        assert_eq!(csv_cell("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-1+2"), "'-1+2");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("\rx"), "\"'\rx\"");
        assert_eq!(csv_cell("-.5"), "'-.5");
        assert_eq!(csv_cell("-5."), "'-5.");
        for same in ["-0.50", "-3", "12.75", "0", "-", "", "Ada Lovelace", "a=b", "2026-01-01"] {
            assert_eq!(csv_cell(same), same);
        }
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
    }
}
