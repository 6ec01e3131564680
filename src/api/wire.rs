// SPDX-License-Identifier: GPL-2.0-or-later
//! What goes over the wire: errors as `{"error": {"code", "message"}}` with their HTTP
//! status (core says what went wrong; the status is decided here), the extractors that
//! turn a bad path, query or body into such an error, and JSON numbers read exactly
//! from their text (`RawValue`, never through f64).

use crate::core::decisions::{BudgetError, BudgetHandle, Decision};
use crate::core::integration::{count_from_raw, money_from_raw, IntegrationError};
use crate::core::money::Money;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path as UrlPath, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// The ledger failed in a way a new connection may not (see `BudgetHandle::forget_on`).
    pub(super) reopen_ledger: bool,
}

impl ApiError {
    pub(super) fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            reopen_ledger: false,
        }
    }

    pub(super) fn bad_body(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_body", message)
    }

    pub(super) fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "forbidden", message)
    }
}

impl From<IntegrationError> for ApiError {
    fn from(e: IntegrationError) -> ApiError {
        // HTTP belongs here, at the edge: core says what went wrong, not how HTTP says it.
        let status = match &e {
            IntegrationError::UnknownJob(_) | IntegrationError::UnknownAccount(_) => 404,
            IntegrationError::AmbiguousJob(_)
            | IntegrationError::NotSettled(_)
            | IntegrationError::NotPriced(_)
            | IntegrationError::Conflict(_) => 409,
            IntegrationError::Invalid(_) => 422,
            IntegrationError::Budget(b) if b.is_ledger() => 503,
            IntegrationError::Budget(_) => 500,
        };
        let reopen_ledger = matches!(&e, IntegrationError::Budget(b) if BudgetHandle::should_reopen(b));
        ApiError { reopen_ledger, ..ApiError::new(status, e.code(), e.to_string()) }
    }
}

impl From<BudgetError> for ApiError {
    fn from(e: BudgetError) -> ApiError {
        IntegrationError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"asbb\""));
        }
        r
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

pub(super) fn ok_json(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(413, "payload_too_large", "the request body is over the size limit ([api] max_body_bytes)")
        } else {
            ApiError::bad_body(r.body_text())
        }
    })
}

fn parse_body<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_body("the request needs a JSON body"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { "malformed_json" } else { "invalid_body" };
        ApiError::new(400, code, e.to_string())
    })
}

pub(super) fn job_id_of(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>()
        .ok()
        .filter(|_| text.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| ApiError::new(400, "invalid_job_id", format!("'{text}' is not a SLURM job id")))
}

pub(super) fn invalid(e: IntegrationError) -> ApiError {
    e.into()
}

/// A JSON body: 400 (`malformed_json`, `invalid_body`) or 413 when it cannot be read.
pub(super) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_of(Bytes::from_request(req, state).await)?;
        Ok(Body(parse_body(&bytes)?))
    }
}

/// Path parameters: 400 `invalid_path` when they do not parse.
pub(super) struct PathArg<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArg<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        UrlPath::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathArg(p.0))
            .map_err(|r| ApiError::new(400, "invalid_path", r.body_text()))
    }
}

/// The query string: 400 `invalid_query` when it does not parse.
pub(super) struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryArgs(q.0))
            .map_err(|r| ApiError::new(400, "invalid_query", r.body_text()))
    }
}

/// Seconds: a whole or decimal number (or its string), rounded half up to whole seconds.
pub(super) fn seconds_from_raw(raw: &RawValue, field: &str) -> Result<u64, ApiError> {
    let m = money_from_raw(raw, field).map_err(invalid)?;
    Ok(((m.micros() as i128 + 500_000) / 1_000_000) as u64)
}

pub(super) fn job_id_from_raw(raw: &RawValue) -> Result<u32, ApiError> {
    Ok(count_from_raw(raw, "job_id", u32::MAX as u64).map_err(invalid)? as u32)
}

pub(super) fn decision_json(d: &Decision, hold: Option<Money>) -> Value {
    let ex = |m: &Money| m.to_exact_string();
    match d {
        Decision::Accept { estimate, available_after, .. } => json!({
            "decision": "accept", "estimate": ex(estimate), "hold": hold.as_ref().map(ex),
            "available_after": ex(available_after), "fits": true,
        }),
        Decision::Hold { estimate, reason, .. } => json!({
            "decision": "hold", "estimate": ex(estimate), "reason": reason, "fits": false,
        }),
        Decision::Reject { reason, estimate, .. } => json!({
            "decision": "reject", "estimate": estimate.as_ref().map(ex), "reason": reason, "fits": false,
        }),
        Decision::Exempt { reason } => json!({"decision": "exempt", "reason": reason, "fits": true}),
    }
}
