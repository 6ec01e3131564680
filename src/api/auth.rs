// SPDX-License-Identifier: GPL-2.0-or-later
//! Who is calling, and what they may do: a bearer token over TCP (compared by SHA-256
//! hash in constant time), the peer's uid over the unix socket. The transport's
//! middleware puts a [`Caller`] on the request; a handler names the role it needs in
//! its signature with [`Authed`], so no handler can forget to check.

use super::state::{AppState, Shared};
use super::wire::ApiError;
use crate::core::config::ApiRole;
use crate::core::decisions::Budget;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::marker::PhantomData;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: ApiRole,
    /// Token name, or the peer's user name (or `uid<N>`).
    pub name: String,
    /// The peer's uid on the unix socket.
    pub uid: Option<u32>,
}

/// What a handler needs of its caller.
pub(super) trait Need {
    fn check(caller: &Caller) -> Result<(), ApiError>;
}

fn at_least(c: &Caller, role: ApiRole) -> Result<(), ApiError> {
    if c.role >= role {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("{} has role {}; this needs {}", c.name, c.role.as_str(), role.as_str())))
    }
}

/// Any authenticated caller (a `user` sees only their own accounts, checked per account).
pub(super) struct AnyCaller;
/// Role `read` or more.
pub(super) struct Reader;
/// Role `integration` or more.
pub(super) struct Integrator;
/// Role `admin`.
pub(super) struct Admin;
/// Role `integration` or more, posting actual costs under its own name: the name is
/// the source (the adjustment's idempotency key), and the import's is reserved.
pub(super) struct CostSource;
/// A quote: a `user` for their own accounts, or role `integration` or more (`read`
/// alone may look but not ask for quotes).
pub(super) struct Quoter;

impl Need for AnyCaller {
    fn check(_: &Caller) -> Result<(), ApiError> {
        Ok(())
    }
}
impl Need for Reader {
    fn check(c: &Caller) -> Result<(), ApiError> {
        at_least(c, ApiRole::Read)
    }
}
impl Need for Integrator {
    fn check(c: &Caller) -> Result<(), ApiError> {
        at_least(c, ApiRole::Integration)
    }
}
impl Need for Admin {
    fn check(c: &Caller) -> Result<(), ApiError> {
        at_least(c, ApiRole::Admin)
    }
}
impl Need for CostSource {
    fn check(c: &Caller) -> Result<(), ApiError> {
        at_least(c, ApiRole::Integration)?;
        if crate::core::config::is_import_source(&c.name) {
            return Err(ApiError::forbidden(format!(
                "'{}' is the source of `asbb-admin integration import-costs`; no API caller may post as it",
                crate::core::text::clean_text(&c.name)
            )));
        }
        Ok(())
    }
}
impl Need for Quoter {
    fn check(c: &Caller) -> Result<(), ApiError> {
        if c.role == ApiRole::User {
            Ok(())
        } else {
            at_least(c, ApiRole::Integration)
        }
    }
}

/// The caller, checked against `N`: 401 when the request has none, 403 when `N` refuses.
pub(super) struct Authed<N: Need>(pub Caller, pub PhantomData<N>);

impl<S: Send + Sync, N: Need> FromRequestParts<S> for Authed<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let caller =
            parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::new(401, "unauthorized", "no caller"))?;
        N::check(&caller)?;
        Ok(Authed(caller, PhantomData))
    }
}

pub(super) fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equal without an early exit, so timing tells nothing about where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    std::hint::black_box(diff) == 0
}

/// The role of a bearer token, checking every configured hash.
fn token_caller(state: &Shared, token: &str) -> Option<Caller> {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for (hash, name, role) in &state.tokens {
        if ct_eq(hash, &digest) && found.is_none() {
            found = Some(Caller { role: *role, name: name.clone(), uid: None });
        }
    }
    found
}

fn peer_caller(state: &Shared, uid: u32) -> Caller {
    let name = crate::system::user_name(uid);
    let role = state.config.api.local_role(uid, name.as_deref(), state.ledger_owner);
    Caller { role, name: name.unwrap_or_else(|| format!("uid{uid}")), uid: Some(uid) }
}

/// The caller a request's bearer token names: `Ok(None)` with no Authorization header,
/// 401 for a header that names no configured token.
fn bearer_caller(state: &Shared, req: &Request) -> Result<Option<Caller>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::new(401, "unauthorized", "this endpoint needs `Authorization: Bearer <token>`"))?;
    token_caller(state, token).map(Some).ok_or_else(|| ApiError::new(401, "unauthorized", "the token is not valid"))
}

pub(super) async fn tcp_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match bearer_caller(&state, &req) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return ApiError::new(401, "unauthorized", "this endpoint needs `Authorization: Bearer <token>`")
                .into_response()
        }
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(caller.clone());
    let mut res = next.run(req).await;
    res.extensions_mut().insert(caller);
    res
}

/// For `/metrics` over TCP: a token is optional, but one that is given must be valid.
pub(super) async fn tcp_auth_optional(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match bearer_caller(&state, &req) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Some(c) = &caller {
        req.extensions_mut().insert(c.clone());
    }
    let mut res = next.run(req).await;
    if let Some(c) = caller {
        res.extensions_mut().insert(c);
    }
    res
}

/// The peer credentials of a unix-socket connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    pub uid: Option<u32>,
}

impl PeerCred {
    pub(super) fn of(stream: &tokio::net::UnixStream) -> PeerCred {
        PeerCred { uid: stream.peer_cred().ok().map(|c| c.uid()) }
    }
}

pub(super) async fn unix_auth(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(uid) = peer.uid else {
        return ApiError::new(401, "unauthorized", "cannot tell who is connecting").into_response();
    };
    let caller = peer_caller(&state, uid);
    req.extensions_mut().insert(caller.clone());
    let mut res = next.run(req).await;
    res.extensions_mut().insert(caller);
    res
}

/// May `caller` read `account`? `user`s only their own.
pub(super) fn check_account_access(budget: &mut Budget, caller: &Caller, account: &str) -> Result<(), ApiError> {
    if caller.role >= ApiRole::Read {
        return Ok(());
    }
    let uid = caller.uid.ok_or_else(|| ApiError::forbidden("no uid"))?;
    let mine = budget.accounts_of_user(uid, Some(&caller.name))?;
    if mine.iter().any(|a| a == account) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{} may read only accounts they run jobs in or are a member of; account '{}' is not one",
            caller.name,
            crate::core::text::clean_text(account)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_hash() {
        let h: [u8; 32] = Sha256::digest(b"secret").into();
        assert!(ct_eq(&h, &h));
        let mut other = h;
        other[31] ^= 1;
        assert!(!ct_eq(&h, &other));
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex32(&hex), Some(h));
        assert_eq!(hex32("zz"), None);
    }
}
