//! The browser console at `/console`: server-rendered pages (maud) for vendor admins and support staff, on the
//! same services as the API. A page is one handler and one template function; the layout, sign-in, sessions and
//! CSRF checks live here, the pages in [`pages`].
//!
//! **Sessions.** Signing in takes an API token; the console keeps its SHA-256 (never the secret) in a session held
//! in memory, named by a random 256-bit id in an `HttpOnly; SameSite=Strict; Path=/console` cookie (`Secure` when
//! the request came over HTTPS through a trusted proxy). Every page checks the token again, so a revoked token
//! ends its sessions at once; a session ends after [`IDLE`] without a page, or at sign-out. Sessions live in one
//! server process: a restart signs everyone out.
//!
//! **CSRF.** Every form carries the session's random CSRF value, compared in constant time before anything is
//! done, and a POST whose `Origin` is not this server is refused; the sign-in form (before any session) is
//! protected by a double-submit cookie. The cookie's `SameSite=Strict` is a third line.
//!
//! **Roles.** What a role may not do, the pages do not offer; the services check again on every action.

mod actions;
mod catalog;
mod commerce;
mod emergency;
mod pages;
mod records;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tessera_core::license_key::ct_eq;

use crate::error::AppError;
use crate::http::extract::{client_ip, rate_key};
use crate::http::AppState;
use crate::services::{Ctx, Principal};
use crate::store::Role;

/// A session ends after this long without a page.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// At most this many sessions are kept (the oldest idle ones go first).
const MAX_SESSIONS: usize = 10_000;
const COOKIE: &str = "tessera_console";
const PRE_COOKIE: &str = "tessera_console_signin";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's sessions, by SHA-256 of the cookie value.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    /// Seconds the sessions' clock runs ahead of the monotonic clock (tests move it to check idle expiry; an
    /// `Instant` cannot be moved back on a machine up for less than the idle time).
    ahead_secs: std::sync::atomic::AtomicU64,
}

struct Session {
    token_hash: [u8; 32],
    /// The console user's name, for one signed in with a password (`None`: with an API token).
    username: Option<String>,
    csrf: String,
    last_seen: Instant,
    /// A page to show once (a new secret), set by a POST and taken by the GET it redirects to, so reloading
    /// neither repeats the action nor shows the secret again.
    once: Option<Once>,
}

/// A page shown once: its title, its navigation entry and its rendered content.
pub(super) struct Once {
    pub title: String,
    pub nav: &'static str,
    pub body: Markup,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.ahead_secs.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A new session for the token with SHA-256 `token_hash` (of `username`, when a console user signed in);
    /// returns the cookie value.
    fn open(&self, token_hash: [u8; 32], username: Option<String>) -> String {
        let id = random_hex();
        let mut map = self.lock();
        let now = self.now();
        map.retain(|_, s| now.duration_since(s.last_seen) < IDLE);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key(&id), Session { token_hash, username, csrf: random_hex(), last_seen: now, once: None });
        id
    }

    /// Keeps `page` for the session's next `GET /console/once` (replacing one not yet shown).
    fn put_once(&self, session: &[u8; 32], page: Once) {
        if let Some(s) = self.lock().get_mut(session) {
            s.once = Some(page);
        }
    }

    fn take_once(&self, session: &[u8; 32]) -> Option<Once> {
        self.lock().get_mut(session).and_then(|s| s.once.take())
    }

    /// The session's token hash, user name and CSRF value, touching it; `None` when unknown or idle too long
    /// (then removed).
    fn touch(&self, id: &str) -> Option<([u8; 32], Option<String>, String)> {
        let mut map = self.lock();
        let k = key(id);
        let s = map.get_mut(&k)?;
        let now = self.now();
        if now.duration_since(s.last_seen) >= IDLE {
            map.remove(&k);
            return None;
        }
        s.last_seen = now;
        Some((s.token_hash, s.username.clone(), s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    /// Test support: moves the sessions' clock `by` ahead, so every session looks idle that much longer.
    pub fn age_all(&self, by: Duration) {
        self.ahead_secs.fetch_add(by.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/overview") }))
        .route("/console/", get(|| async { Redirect::to("/console/overview") }))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/once", get(once))
        .route("/console/assets/console.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/console/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .merge(pages::routes())
        .merge(actions::routes())
        .merge(catalog::routes())
        .merge(commerce::routes())
        .merge(emergency::routes())
        .merge(records::routes())
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

/// Headers every console page carries: no framing, no script or style from elsewhere, nothing cached.
/// A screen with the navigation: 200, or the status of the refusal shown on it.
fn page(user: &User, title: &str, nav: &str, body: Markup, err: Option<&crate::error::AppError>) -> Response {
    page_response(err.map_or(StatusCode::OK, status_of), layout(user, title, nav, body))
}

fn page_response(status: StatusCode, body: Markup) -> Response {
    let mut r = (status, body.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// A posted form. A body that is no form of this page (another content type, too large, malformed) is refused
/// with a console page that says so, not the framework's plain text.
pub(super) struct Form<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Form<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(Form(v)),
            Err(e) => {
                let message =
                    format!("the form could not be read ({}): reload the page and send it again", e.body_text());
                let code = match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => tessera_core::protocol::ErrorCode::PayloadTooLarge,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => tessera_core::protocol::ErrorCode::UnsupportedMediaType,
                    _ => tessera_core::protocol::ErrorCode::BadRequest,
                };
                Err(error_page(&AppError::new(code, message)))
            }
        }
    }
}

/// A page's query string; one that does not parse is refused with a console page.
pub(super) struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(error_page(&AppError::bad_request(format!(
                "the address is not one of this page's ({}): go back and use the page's own links and filters",
                e.body_text()
            )))),
        }
    }
}

/// A signed-in console user: the token's principal, checked again on this request.
pub struct User {
    pub ctx: Ctx,
    pub role: Role,
    csrf: String,
    /// The session's key in [`Sessions`].
    session: [u8; 32],
    /// The console user's name (`None`: signed in with an API token).
    username: Option<String>,
}

impl User {
    /// The refusal of a form whose CSRF value is not this session's; `None` when it is.
    fn refuse_csrf(&self, sent: &str) -> Option<Response> {
        (!ct_eq(sent.as_bytes(), self.csrf.as_bytes())).then(forbidden_form)
    }

    fn may_support(&self) -> bool {
        matches!(self.role, Role::VendorAdmin | Role::TenantAdmin | Role::Support)
    }

    fn may_admin(&self) -> bool {
        matches!(self.role, Role::VendorAdmin | Role::TenantAdmin)
    }
}

/// Shows `page` once: kept in the session, and a redirect to the page that takes it (POST, redirect, GET).
fn show_once(state: &AppState, user: &User, page: Once) -> Response {
    state.console.put_once(&user.session, page);
    Redirect::to("/console/once").into_response()
}

async fn once(State(state): State<AppState>, user: User) -> Response {
    match state.console.take_once(&user.session) {
        Some(p) => page_response(StatusCode::OK, layout(&user, &p.title, p.nav, p.body)),
        None => {
            let body = html! {
                h1 { "Already shown" }
                p { "This page showed a secret once and does not show it again. If it was not copied, make a new one "
                    "(and revoke or leave unused the old one)." }
                p { a href="/console/overview" { "Back to the console" } }
            };
            page_response(StatusCode::OK, layout(&user, "Already shown", "", body))
        }
    }
}

fn forbidden_form() -> Response {
    page_response(
        StatusCode::FORBIDDEN,
        bare(
            "Form refused",
            html! {
                h1 { "This form was refused" }
                p { "It did not come from a console page of this session (its security token is missing or stale). "
                    "Nothing was changed. Go back, reload the page and send it again." }
                p { a href="/console/overview" { "Back to the console" } }
            },
        ),
    )
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Secure` when the request came over HTTPS through a proxy (`X-Forwarded-Proto: https`). A forged header
/// only makes the cookie stricter, so it needs no trust.
fn secure_flag(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")));
    if https {
        "; Secure"
    } else {
        ""
    }
}

/// Whether a POST's `Origin` (sent by every current browser) names this server: its host and port must be the
/// request's `Host` (or, behind a trusted proxy, its `X-Forwarded-Host`), compared without case. A request with no
/// `Origin` (not from a browser page) is left to the CSRF value.
fn same_origin(headers: &HeaderMap, trust_forwarded: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" (a sandboxed or file page) and anything else that is no origin
    };
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let host = trust_forwarded
        .then(|| header_text("x-forwarded-host").and_then(|h| h.split(',').next()).map(str::trim))
        .flatten()
        .or_else(|| header_text("host"))
        .unwrap_or("");
    let default_port = |a: &str| match scheme.to_ascii_lowercase().as_str() {
        "https" => a.strip_suffix(":443").map(str::to_string),
        "http" => a.strip_suffix(":80").map(str::to_string),
        _ => None,
    };
    let (origin, host) = (authority.to_ascii_lowercase(), host.to_ascii_lowercase());
    !host.is_empty()
        && (origin == host
            || default_port(&host).is_some_and(|h| h == origin)
            || default_port(&origin).is_some_and(|o| o == host))
}

impl FromRequestParts<AppState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let to_sign_in = |why: &str| Redirect::to(&format!("/console/sign-in?why={why}")).into_response();
        let Some(id) = cookie_value(&parts.headers, COOKIE) else {
            return Err(to_sign_in("signed-out"));
        };
        let Some((token_hash, username, csrf)) = state.console.touch(id) else {
            return Err(to_sign_in("expired"));
        };
        if parts.method == axum::http::Method::POST
            && !same_origin(&parts.headers, state.services.config.trust_forwarded_for)
        {
            return Err(forbidden_form());
        }
        let principal = match state.services.principal_for_token_hash(token_hash).await {
            Ok(p) => p,
            Err(e) if e.status() == 401 => {
                state.console.close(id);
                return Err(to_sign_in("revoked"));
            }
            Err(e) => return Err(error_page(&e)),
        };
        let ip = client_ip(parts, state.services.config.trust_forwarded_for);
        let role = principal.role;
        Ok(User { ctx: console_ctx(principal, username.as_deref(), ip), role, csrf, session: key(id), username })
    }
}

/// The context of a console action: the token's principal, with the console and the user (or the token) named
/// in the audit log's actor.
fn console_ctx(principal: Principal, username: Option<&str>, ip: Option<String>) -> Ctx {
    let actor = match username {
        Some(u) => format!("console:user:{u}"),
        None => format!("console:token:{}", principal.token_id),
    };
    Ctx { principal: Some(principal), ip, actor }
}

// Sign-in ------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct SignInQuery {
    #[serde(default)]
    why: Option<String>,
}

async fn sign_in_page(headers: HeaderMap, Query(q): Query<SignInQuery>) -> Response {
    let note = match q.why.as_deref() {
        Some("expired") => Some("Your session ended after 30 minutes without activity: sign in again."),
        Some("revoked") => Some("Your user or token was revoked: sign in with a current one."),
        Some("signed-out") => Some("Sign in to use the console."),
        Some("bye") => Some("You are signed out."),
        _ => None,
    };
    sign_in_form(&headers, note, "", None)
}

/// Which sign-in form a refusal belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SignInWith {
    Password,
    Token,
}

/// The sign-in page; `error`: the refusal to show beside the form it concerns (its status is the page's).
fn sign_in_form(
    headers: &HeaderMap,
    note: Option<&str>,
    username: &str,
    error: Option<(SignInWith, &AppError)>,
) -> Response {
    if let Some(cause) = error.and_then(|(_, e)| e.cause.as_ref()) {
        tracing::error!(cause, "internal error (console sign-in)");
    }
    let message = |with: SignInWith| error.filter(|(w, _)| *w == with).map(|(_, e)| e.message.as_str());
    let (password_error, token_error) = (message(SignInWith::Password), message(SignInWith::Token));
    let pre = random_hex();
    let body = bare(
        "Sign in",
        html! {
            main.signin {
                h1 { "Tessera console" }
                @if let Some(n) = note { p.note role="status" { (n) } }
                form #password-form method="post" action="/console/sign-in" {
                    input type="hidden" name="csrf" value=(pre);
                    div.field {
                        label for="username" { "Username" }
                        input #username name="username" value=(username) autocomplete="username" required
                            autofocus[token_error.is_none()];
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required
                            aria-describedby=[password_error.map(|_| "password-error")];
                        @if let Some(e) = password_error { p #password-error .error role="alert" { (e) } }
                    }
                    button type="submit" { "Sign in" }
                }
                h2 { "Or with an API token" }
                form #token-form method="post" action="/console/sign-in" {
                    input type="hidden" name="csrf" value=(pre);
                    label for="token" { "API token" }
                    input #token type="password" name="token" autocomplete="off" required
                        aria-describedby=[token_error.map(|_| "token-error")] autofocus[token_error.is_some()];
                    @if let Some(e) = token_error { p #token-error .error role="alert" { (e) } }
                    p.hint { "A token made with " code { "POST /v1/tokens" } " or printed by the server at its first start." }
                    button type="submit" { "Sign in with the token" }
                }
            }
        },
    );
    let status =
        error.map_or(StatusCode::OK, |(_, e)| StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED));
    let mut r = page_response(status, body);
    let cookie = format!(
        "{PRE_COOKIE}={pre}; HttpOnly; SameSite=Strict; Path=/console/sign-in; Max-Age=3600{}",
        secure_flag(headers)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn sign_in(State(state): State<AppState>, parts: Parts, Form(f): Form<SignInForm>) -> Response {
    let headers = &parts.headers;
    let pre = cookie_value(headers, PRE_COOKIE).unwrap_or("");
    if pre.is_empty()
        || !ct_eq(pre.as_bytes(), f.csrf.as_bytes())
        || !same_origin(headers, state.services.config.trust_forwarded_for)
    {
        return forbidden_form();
    }
    let ip = client_ip(&parts, state.services.config.trust_forwarded_for);
    let with = if f.username.trim().is_empty() && !f.token.trim().is_empty() {
        SignInWith::Token
    } else {
        SignInWith::Password
    };
    if let Err(e) = state.admin_limiter.check(&rate_key(ip.as_deref())) {
        return sign_in_form(headers, None, &f.username, Some((with, &AppError::rate_limited(e))));
    }
    if with == SignInWith::Password {
        // Guessing passwords is slow per address and per username, whichever runs out first.
        let by_ip = [b"ip:".as_slice(), &rate_key(ip.as_deref())].concat();
        let by_name = [b"user:".as_slice(), f.username.trim().to_lowercase().as_bytes()].concat();
        let limited = state.password_limiter.check(&by_ip).and_then(|()| state.password_limiter.check(&by_name));
        if let Err(e) = limited {
            return sign_in_form(headers, None, &f.username, Some((with, &AppError::rate_limited(e))));
        }
    }
    let signed_in = match with {
        SignInWith::Token => state
            .services
            .authenticate(&f.token)
            .await
            .map(|_| (tessera_core::license_key::hash_secret(f.token.trim()), None)),
        SignInWith::Password => {
            state.services.sign_in_password(&f.username, &f.password).await.map(|s| (s.token_hash, Some(s.username)))
        }
    };
    match signed_in {
        Ok((token_hash, username)) => {
            // A session this browser already had ends: one session per sign-in.
            if let Some(old) = cookie_value(headers, COOKIE) {
                state.console.close(old);
            }
            let id = state.console.open(token_hash, username);
            let mut r = Redirect::to("/console/overview").into_response();
            let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console{}", secure_flag(headers));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => sign_in_form(headers, None, &f.username, Some((with, &e))),
    }
}

/// A form that carries only the CSRF value (buttons: sign out, revoke, unblock, deactivate).
#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(State(state): State<AppState>, headers: HeaderMap, user: User, Form(f): Form<CsrfOnly>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    if let Some(id) = cookie_value(&headers, COOKIE) {
        state.console.close(id);
    }
    let mut r = Redirect::to("/console/sign-in?why=bye").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("tessera_console=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"),
    );
    r
}

// Layout -------------------------------------------------------------------------------------------------------

/// One entry of the navigation: its path, its label, and whether a role sees it.
struct Nav {
    path: &'static str,
    label: &'static str,
    shown: fn(&User) -> bool,
}

const NAV: &[Nav] = &[
    Nav { path: "/console/overview", label: "Overview", shown: |_| true },
    Nav { path: "/console/licenses", label: "Licenses", shown: |_| true },
    Nav { path: "/console/offline", label: "Offline desk", shown: User::may_support },
    Nav { path: "/console/emergency", label: "Emergency desk", shown: User::may_support },
    Nav { path: "/console/customers", label: "Customers", shown: |_| true },
    Nav { path: "/console/products", label: "Products", shown: |_| true },
    Nav { path: "/console/templates", label: "Templates", shown: |_| true },
    Nav { path: "/console/plans", label: "Plans", shown: |_| true },
    Nav { path: "/console/subscriptions", label: "Subscriptions", shown: |_| true },
    Nav { path: "/console/billing", label: "Billing", shown: |_| true },
    Nav { path: "/console/security", label: "Security", shown: |_| true },
    Nav { path: "/console/audit", label: "Audit", shown: |_| true },
    Nav { path: "/console/tokens", label: "API tokens", shown: |_| true },
    Nav { path: "/console/users", label: "Console users", shown: User::may_admin },
    Nav { path: "/console/tenants", label: "Tenants", shown: |u| u.role == Role::VendorAdmin },
];

/// A page with the navigation, for a signed-in user. `current` is the navigation path it belongs to.
fn layout(user: &User, title: &str, current: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to the page" }
                header.top {
                    a.brand href="/console/overview" { "Tessera" }
                    nav aria-label="Main" {
                        ul {
                            @for n in NAV.iter().filter(|n| (n.shown)(user)) {
                                li { a href=(n.path) aria-current=[(n.path == current).then_some("page")] { (n.label) } }
                            }
                        }
                    }
                    div.who {
                        span { @if let Some(u) = &user.username { (u) " · " } (user.role.as_str()) }
                        form method="post" action="/console/sign-out" {
                            (csrf_field(user))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (content) }
            }
        }
    }
}

/// A page without navigation (sign-in, refusals).
fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (content) }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Tessera" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

fn csrf_field(user: &User) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf); }
}

/// Whether a refusal is about the user's role (a page of its own), not about what was entered (shown beside the
/// field: a suspended license or an altered code is 403 too, and belongs beside the code).
fn role_refusal(e: &AppError) -> bool {
    e.code == tessera_core::protocol::ErrorCode::Forbidden
}

/// The HTTP status of a service's refusal.
fn status_of(e: &AppError) -> StatusCode {
    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error from the services as a page (for errors that concern no form field).
fn error_page(e: &AppError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(cause) = &e.cause {
        tracing::error!(code = e.code.as_str(), cause, "internal error (console)");
    }
    page_response(
        status,
        bare(
            "Error",
            html! {
                main {
                    h1 { "That did not work" }
                    p.error role="alert" { (e.message) }
                    p { code { (e.code.as_str()) } }
                    p { a href="/console/overview" { "Back to the console" } }
                }
            },
        ),
    )
}

/// A QR code of `text` as inline SVG (generated here from the code's own characters).
fn qr_svg(text: &str) -> Option<Markup> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).quiet_zone(true).build();
    Some(PreEscaped(svg))
}

#[cfg(test)]
mod tests {
    use super::same_origin;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins_match_this_host_only() {
        let same = |pairs, trust| same_origin(&headers(pairs), trust);
        assert!(same(&[("host", "127.0.0.1:8080")], false), "no Origin: left to the CSRF value");
        assert!(same(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")], false));
        assert!(same(&[("host", "Console.Example.com"), ("origin", "https://console.example.com")], false));
        assert!(same(&[("host", "console.example.com:443"), ("origin", "https://console.example.com")], false));
        assert!(same(&[("host", "console.example.com"), ("origin", "http://console.example.com:80")], false));
        assert!(!same(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")], false));
        assert!(!same(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8081")], false));
        assert!(!same(&[("host", "127.0.0.1:8080"), ("origin", "null")], false));
        assert!(!same(&[("origin", "http://127.0.0.1:8080")], false), "no Host to compare with");
        assert!(!same(&[("host", "console.example.com:8443"), ("origin", "https://console.example.com")], false));
        // Behind a trusted proxy that rewrites Host, the forwarded host is the one the browser saw.
        let proxied = [
            ("host", "backend:8080"),
            ("x-forwarded-host", "console.example.com"),
            ("origin", "https://console.example.com"),
        ];
        assert!(same(&proxied, true));
        assert!(!same(&proxied, false), "an untrusted X-Forwarded-Host is ignored");
    }
}
