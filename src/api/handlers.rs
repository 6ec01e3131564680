// SPDX-License-Identifier: GPL-2.0-or-later
//! The endpoints: each names the role it needs ([`Authed`]) and the path, query and
//! body it takes ([`PathArg`], [`QueryArgs`], [`Body`]), then asks the core through
//! the one ledger handle (`Shared::with_budget`).

use super::auth::{check_account_access, Admin, AnyCaller, Authed, Caller, CostSource, Integrator, Quoter, Reader};
use super::state::AppState;
use super::wire::*;
use crate::core::config::ApiRole;
use crate::core::decisions::Budget;
use crate::core::decisions::BudgetError;
use crate::core::decisions::{parse_date, DAY_S};
use crate::core::grants::report::ReportRange;
use crate::core::grants::{GrantDetail, GrantFilter};
use crate::core::integration::{money_from_raw, unknown_job, CostUpdate, Feedback};
use crate::core::money::Money;
use crate::core::pricing::metadata::MetadataFields;
use crate::core::usage::UsageKey;
use crate::render::{grant_json, render, render_usage, ReportFormat, UsageFormat};
use crate::shape::RequestArgs;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

pub(super) async fn health(State(state): State<AppState>) -> ApiResult {
    let r = state
        .with_budget(|b, _| {
            b.ledger.schema_version().map_err(|e| ApiError::new(503, "ledger_unavailable", e.to_string()))
        })
        .await;
    match r {
        Ok(v) => ok_json(json!({"status": "ok", "ledger": "ok", "schema_version": v})),
        Err(e) => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "unavailable", "ledger": e.message, "error": {"code": e.code, "message": e.message}}),
            ),
        )
            .into_response()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedbackBody {
    job_id: Box<RawValue>,
    #[serde(default)]
    cluster: Option<String>,
    // Each may be left out (a partial record).
    #[serde(default)]
    estimated_cost: Option<Box<RawValue>>,
    #[serde(default)]
    actual_cost: Option<Box<RawValue>>,
    #[serde(default)]
    estimated_duration: Option<Box<RawValue>>,
    #[serde(default)]
    actual_duration: Option<Box<RawValue>>,
    #[serde(default)]
    performance_rating: Option<Box<RawValue>>,
    #[serde(default)]
    optimization_hints: Option<Value>,
}

/// A field that may be left out (or sent as null), read with `read` when given.
fn given<T>(
    raw: &Option<Box<RawValue>>,
    read: impl Fn(&RawValue) -> Result<T, ApiError>,
) -> Result<Option<T>, ApiError> {
    match raw.as_deref() {
        Some(r) if r.get().trim() != "null" => read(r).map(Some),
        _ => Ok(None),
    }
}

pub(super) async fn feedback(
    State(state): State<AppState>,
    Authed(caller, _): Authed<Integrator>,
    Body(b): Body<FeedbackBody>,
) -> ApiResult {
    let rating = match &b.performance_rating {
        None => None,
        Some(r) if r.get().trim() == "null" => None,
        Some(r) => {
            let text = r.get().trim();
            let s = if text.starts_with('"') {
                serde_json::from_str::<String>(text).map_err(|e| ApiError::bad_body(e.to_string()))?
            } else {
                money_from_raw(r, "performance_rating").map_err(invalid)?;
                text.to_string()
            };
            if s.len() > 64 || s.chars().any(char::is_control) {
                return Err(ApiError::new(422, "invalid", "performance_rating: at most 64 printable characters"));
            }
            Some(s)
        }
    };
    let f = Feedback {
        cluster: b.cluster,
        job_id: job_id_from_raw(&b.job_id)?,
        estimated_cost: given(&b.estimated_cost, |r| money_from_raw(r, "estimated_cost").map_err(invalid))?,
        actual_cost: given(&b.actual_cost, |r| money_from_raw(r, "actual_cost").map_err(invalid))?,
        estimated_duration_s: given(&b.estimated_duration, |r| seconds_from_raw(r, "estimated_duration"))?,
        actual_duration_s: given(&b.actual_duration, |r| seconds_from_raw(r, "actual_duration"))?,
        performance_rating: rating,
        optimization_hints: b.optimization_hints,
    };
    let name = caller.name.clone();
    let out = state.with_budget(move |bud, now| Ok(bud.record_feedback(&f, &name, now)?)).await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

/// `cost_data`: the keys asbb reads; any others are kept as sent (the whole object is
/// stored with the update and shown in the job's budget context).
#[derive(Deserialize)]
pub(super) struct CostDataBody {
    actual_cost: Box<RawValue>,
    #[serde(default)]
    compute_cost: Option<Box<RawValue>>,
    #[serde(default)]
    storage_cost: Option<Box<RawValue>>,
    #[serde(default)]
    network_cost: Option<Box<RawValue>>,
    #[serde(default)]
    spot_savings: Option<Box<RawValue>>,
    #[serde(default)]
    instance_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CostUpdateBody {
    job_id: Box<RawValue>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    performance_data: Option<Value>,
    /// Read twice: as the fields asbb uses, and as the object to keep.
    cost_data: Box<RawValue>,
    #[serde(default)]
    metadata: Option<Value>,
}

pub(super) async fn cost_update(
    State(state): State<AppState>,
    Authed(caller, _): Authed<CostSource>,
    Body(b): Body<CostUpdateBody>,
) -> ApiResult {
    let opt = |r: &Option<Box<RawValue>>, f: &str| -> Result<Option<Money>, ApiError> {
        r.as_deref().map(|r| money_from_raw(r, f).map_err(invalid)).transpose()
    };
    let as_sent: serde_json::Map<String, Value> =
        serde_json::from_str(b.cost_data.get()).map_err(|e| ApiError::bad_body(format!("cost_data: {e}")))?;
    let data: CostDataBody =
        serde_json::from_str(b.cost_data.get()).map_err(|e| ApiError::bad_body(format!("cost_data: {e}")))?;
    let u = CostUpdate {
        cluster: b.cluster,
        job_id: job_id_from_raw(&b.job_id)?,
        source: caller.name.clone(),
        actual: money_from_raw(&data.actual_cost, "cost_data.actual_cost").map_err(invalid)?,
        compute: opt(&data.compute_cost, "cost_data.compute_cost")?,
        storage: opt(&data.storage_cost, "cost_data.storage_cost")?,
        network: opt(&data.network_cost, "cost_data.network_cost")?,
        spot_savings: opt(&data.spot_savings, "cost_data.spot_savings")?,
        instance_types: data.instance_types,
        performance: b.performance_data,
        metadata: b.metadata,
        cost_data: Some(Value::Object(as_sent)),
        expect_account: None,
        expect_partition: None,
    };
    let name = caller.name.clone();
    let out = state.with_budget(move |bud, now| Ok(bud.apply_cost_update(&u, &name, now)?)).await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterQuery {
    cluster: Option<String>,
}

pub(super) async fn budget_context(
    State(state): State<AppState>,
    Authed(caller, _): Authed<AnyCaller>,
    PathArg(job_id): PathArg<String>,
    QueryArgs(q): QueryArgs<ClusterQuery>,
) -> ApiResult {
    let job_id = job_id_of(&job_id)?;
    let out = state
        .with_budget(move |b, now| {
            let cluster = q.cluster.as_deref();
            if caller.role >= ApiRole::Read {
                return Ok(b.budget_context(cluster, job_id, now)?);
            }
            // A user sees jobs in their accounts; any other job id gets the answer an
            // unknown one gets, so it tells them nothing about other accounts' jobs.
            let mine = b.accounts_of_user(caller.uid.unwrap_or(u32::MAX), Some(&caller.name))?;
            let candidates = b.accounts_with_job_id(cluster, job_id)?;
            if !candidates.iter().any(|a| mine.contains(a)) {
                return Err(unknown_job(cluster, job_id).into());
            }
            let ctx = b.budget_context(cluster, job_id, now)?;
            if !mine.contains(&ctx.account.name) {
                return Err(unknown_job(cluster, job_id).into());
            }
            Ok(ctx)
        })
        .await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckBody {
    account: String,
    partition: String,
    #[serde(default = "one")]
    nodes: u32,
    #[serde(default)]
    cpus: Option<u32>,
    #[serde(default)]
    cpus_per_node: Option<u32>,
    #[serde(default)]
    mem: Option<String>,
    #[serde(default)]
    mem_per_cpu: Option<String>,
    /// Memory for the whole job in MB (instead of mem / mem_per_cpu).
    #[serde(default)]
    mem_mb: Option<u64>,
    #[serde(default)]
    gpus: Option<u32>,
    #[serde(default)]
    gres: Option<String>,
    time: String,
    #[serde(default = "one")]
    array_tasks: u32,
    #[serde(default)]
    qos: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// Grant, project, domain, hints and cost constraints, as at submit.
    #[serde(default)]
    job_metadata: Option<MetadataFields>,
}

fn one() -> u32 {
    1
}

pub(super) async fn check(
    State(state): State<AppState>,
    Authed(caller, _): Authed<Quoter>,
    Body(b): Body<CheckBody>,
) -> ApiResult {
    let args = RequestArgs {
        partition: Some(b.partition),
        nodes: b.nodes,
        cpus_per_node: b.cpus_per_node,
        cpus: b.cpus,
        mem: b.mem,
        mem_per_cpu: b.mem_per_cpu,
        gpus: b.gpus,
        gres: b.gres,
        time: b.time,
        array_tasks: b.array_tasks,
        qos: b.qos,
        mem_mb: b.mem_mb,
    };
    let (user, uid) = match (caller.role, caller.uid) {
        (ApiRole::User, Some(uid)) => (caller.name.clone(), uid),
        _ => (b.user.clone().unwrap_or_else(|| caller.name.clone()), caller.uid.unwrap_or(0)),
    };
    let req = args.to_request(&b.account, &user, uid).map_err(|e| ApiError::new(422, "invalid", e.0))?;
    let meta = b
        .job_metadata
        .map(|m| m.into_metadata("job_metadata"))
        .transpose()
        .map_err(|e| ApiError::new(422, "invalid", e.to_string()))?
        .unwrap_or_default();
    let out = state
        .with_budget(move |bud, now| {
            check_account_access(bud, &caller, &req.account)?;
            let (decision, hold) = bud.check_quote(&req, &meta, now)?;
            let available = bud.balance(&req.account, now).ok().map(|b| b.available.to_exact_string());
            let mut v = decision_json(&decision, hold);
            v["account"] = json!(req.account);
            v["partition"] = json!(req.partition);
            v["available"] = json!(available);
            Ok(v)
        })
        .await?;
    ok_json(out)
}

pub(super) async fn accounts(State(state): State<AppState>, _: Authed<Reader>) -> ApiResult {
    let out = state
        .with_budget(move |b, now| {
            let names: Vec<String> = b.accounts()?.into_iter().map(|a| a.name).collect();
            let mut v = Vec::new();
            for n in names {
                let bal = b.balance(&n, now)?;
                v.push(serde_json::to_value(b.account_context(&bal, now)?).unwrap_or_default());
            }
            Ok(v)
        })
        .await?;
    ok_json(Value::Array(out))
}

pub(super) async fn account(
    State(state): State<AppState>,
    Authed(caller, _): Authed<AnyCaller>,
    PathArg(name): PathArg<String>,
) -> ApiResult {
    let out = state
        .with_budget(move |b, now| {
            check_account_access(b, &caller, &name)?;
            let bal = b.balance(&name, now)?;
            Ok(b.account_context(&bal, now)?)
        })
        .await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

pub(super) async fn members(
    State(state): State<AppState>,
    _: Authed<Reader>,
    PathArg(name): PathArg<String>,
) -> ApiResult {
    let out = state.with_budget(move |b, _| Ok(b.members(&name)?)).await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

pub(super) async fn member_add(
    State(state): State<AppState>,
    Authed(caller, _): Authed<Admin>,
    PathArg((account, user)): PathArg<(String, String)>,
) -> ApiResult {
    let (user, uid) = crate::system::resolve_user(&user);
    let out = state
        .with_budget(move |b, now| {
            let added = b.add_member(&account, &user, uid, &caller.name, now)?;
            Ok(json!({"account": account, "user": user, "uid": uid, "applied": added}))
        })
        .await?;
    ok_json(out)
}

pub(super) async fn member_remove(
    State(state): State<AppState>,
    Authed(caller, _): Authed<Admin>,
    PathArg((account, user)): PathArg<(String, String)>,
) -> ApiResult {
    let (user, _) = crate::system::resolve_user(&user);
    let out = state
        .with_budget(move |b, now| {
            let removed = b.remove_member(&account, &user, &caller.name, now)?;
            Ok(json!({"account": account, "user": user, "applied": removed}))
        })
        .await?;
    ok_json(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    format: Option<String>,
    period: Option<u32>,
}

/// The grants a caller may read: all for the read role and above; for a user on the
/// socket, those that fund an account they belong to (have jobs in or are a member of).
fn visible_grants(b: &mut Budget, caller: &Caller) -> Result<Vec<GrantDetail>, ApiError> {
    let all = b.grants(&GrantFilter::default())?;
    if caller.role >= ApiRole::Read {
        return Ok(all);
    }
    let mine = b.accounts_of_user(caller.uid.unwrap_or(u32::MAX), Some(&caller.name))?;
    Ok(all.into_iter().filter(|g| g.grant.account.as_ref().is_some_and(|a| mine.contains(a))).collect())
}

/// One grant the caller may read; any other number answers the 404 of an unknown one.
fn visible_grant(b: &mut Budget, caller: &Caller, number: &str) -> Result<GrantDetail, ApiError> {
    visible_grants(b, caller)?.into_iter().find(|g| g.grant.number == number).ok_or_else(|| {
        ApiError::new(404, "unknown_grant", format!("unknown grant '{}'", crate::core::text::clean_text(number)))
    })
}

pub(super) async fn grants(State(state): State<AppState>, Authed(caller, _): Authed<AnyCaller>) -> ApiResult {
    let out = state
        .with_budget(move |b, _| Ok(visible_grants(b, &caller)?.iter().map(grant_json).collect::<Vec<_>>()))
        .await?;
    ok_json(Value::Array(out))
}

pub(super) async fn grant(
    State(state): State<AppState>,
    Authed(caller, _): Authed<AnyCaller>,
    PathArg(number): PathArg<String>,
) -> ApiResult {
    let out = state.with_budget(move |b, _| Ok(grant_json(&visible_grant(b, &caller, &number)?))).await?;
    ok_json(out)
}

pub(super) async fn grant_report(
    State(state): State<AppState>,
    Authed(caller, _): Authed<AnyCaller>,
    PathArg(number): PathArg<String>,
    QueryArgs(q): QueryArgs<ReportQuery>,
) -> ApiResult {
    let (format, ctype) = match q.format.as_deref().unwrap_or("json") {
        "json" => (ReportFormat::Json, "application/json"),
        "csv" => (ReportFormat::Csv, "text/csv; charset=utf-8"),
        "html" => (ReportFormat::Html, "text/html; charset=utf-8"),
        "agency-required" => (ReportFormat::AgencyRequired, "text/plain; charset=utf-8"),
        other => {
            return Err(ApiError::new(
                400,
                "invalid_query",
                format!("format '{}' is not json, csv, html or agency-required", crate::core::text::clean_text(other)),
            ))
        }
    };
    let range = match q.period {
        Some(p) => ReportRange::Period(p),
        None => ReportRange::Whole,
    };
    let text = state
        .with_budget(move |b, now| {
            visible_grant(b, &caller, &number)?;
            let r = b.grant_report(&number, range, None, now).map_err(|e| match e {
                BudgetError::Invalid(m) if m.starts_with("unknown grant") => ApiError::new(404, "unknown_grant", m),
                other => other.into(),
            })?;
            Ok(render(&r, format))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, ctype)], text).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    from: String,
    to: String,
    /// Comma-separated: account, user, project, domain, grant, partition, qos, cluster.
    by: String,
    format: Option<String>,
}

/// `asbb-admin report usage` over HTTP.
pub(super) async fn usage_report(
    State(state): State<AppState>,
    _: Authed<Reader>,
    QueryArgs(q): QueryArgs<UsageQuery>,
) -> ApiResult {
    let bad = |m: String| ApiError::new(400, "invalid_query", m);
    let (format, ctype) = match q.format.as_deref().unwrap_or("json") {
        "json" => (UsageFormat::Json, "application/json"),
        "csv" => (UsageFormat::Csv, "text/csv; charset=utf-8"),
        "text" => (UsageFormat::Text, "text/plain; charset=utf-8"),
        other => {
            return Err(bad(format!("format '{}' is not json, csv or text", crate::core::text::clean_text(other))))
        }
    };
    let day = |name: &str, text: &str| parse_date(text).map_err(|e| bad(format!("{name}: {e}")));
    let (from, until) = (day("from", &q.from)?, day("to", &q.to)? + DAY_S);
    let by =
        q.by.split(',')
            .map(|k| UsageKey::parse(k.trim()).map_err(|e| bad(format!("by: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
    let text = state.with_budget(move |b, _| Ok(render_usage(&b.usage_report(from, until, &by)?, format))).await?;
    Ok(([(header::CONTENT_TYPE, ctype)], text).into_response())
}

pub(super) async fn me(State(state): State<AppState>, Authed(caller, _): Authed<AnyCaller>) -> ApiResult {
    let c2 = caller.clone();
    let out = state
        .with_budget(move |b, now| {
            let names: Vec<String> = if c2.role >= ApiRole::Read {
                b.accounts()?.into_iter().map(|a| a.name).collect()
            } else {
                b.accounts_of_user(c2.uid.unwrap_or(u32::MAX), Some(&c2.name))?
            };
            let mut v = Vec::new();
            for n in names {
                let bal = b.balance(&n, now)?;
                v.push(serde_json::to_value(b.account_context(&bal, now)?).unwrap_or_default());
            }
            Ok(v)
        })
        .await?;
    ok_json(json!({"user": caller.name, "uid": caller.uid, "role": caller.role.as_str(), "accounts": out}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobsQuery {
    limit: Option<u32>,
}

pub(super) async fn my_jobs(
    State(state): State<AppState>,
    Authed(caller, _): Authed<AnyCaller>,
    QueryArgs(q): QueryArgs<JobsQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(20).min(1000);
    let name = caller.name.clone();
    let jobs = state.with_budget(move |b, _| Ok(b.recent_jobs(&name, limit)?)).await?;
    ok_json(serde_json::to_value(jobs).unwrap_or_default())
}
