//! X (Twitter) Ads API emulator: custom audiences and their users (shared/spec/platforms-more.md
//! §F), under `/12/` and `/11/` (the official SDK, twitter-ads 11.0.0, still calls `/11/`):
//!
//! - `GET  /{v}/accounts/{account}`: the ad account (any id of lowercase letters and digits);
//! - `GET  /{v}/accounts/{account}/custom_audiences?q&count&cursor&custom_audience_ids&with_total_count`:
//!   `{data, next_cursor}`; `q` a case-insensitive prefix of the name, `count` 1 to 1,000
//!   (default 200), the cursor an offset passed back as it came;
//! - `POST /{v}/accounts/{account}/custom_audiences?name=…`: a new audience, `{data}`;
//! - `GET  /{v}/accounts/{account}/custom_audiences/{id}`;
//! - `POST /{v}/accounts/{account}/custom_audiences/{id}/users`: a JSON array of operations
//!   `{"operation_type": "Update"|"Delete", "params": {"users": [...], "effective_at"?,
//!   "expires_at"?}}`, answered `{"data": {"success_count", "total_count"}}`, both the users
//!   processed (the SDK's own example prints `total_count` as "users").
//!
//! Every request must be signed with OAuth 1.0a HMAC-SHA1 with the sandbox's credentials below
//! (`SANDBOX_*`, documented so jobs, tests and the demo can use them). The signature is verified
//! as X verifies it: the method, the base URI from the `Host` header and the path, the `oauth_*`
//! and query parameters (a JSON body is not signed); the nonce is taken once and the timestamp
//! must be within 15 minutes of the sandbox's clock. Anything else is HTTP 401
//! `UNAUTHORIZED_ACCESS`, saying which check failed, never echoing a credential.
//!
//! Users bodies are checked: `Content-Type: application/json`, at most 5,000,000 bytes, 1 to
//! 2,500 operations (X's "batch size") and at most 2,500 users in all (X's earlier pages counted
//! users); `operation_type` `Update` or `Delete`; `params.users` objects of `email`,
//! `phone_number`, `handle`, `twitter_id`, `device_id` (arrays of SHA-256 in lowercase hex) and
//! `partner_user_id` (arrays of plain ids). X's batches "fail or succeed together": a refused
//! user fails the request with HTTP 400, `errors` and `operation_errors` index-aligned with the
//! operations, naming places, never values; `invalid_row_rate` refuses users so. An audience
//! whose name begins `undercounted` answers one user short and applies nothing: how a test stands
//! for X counting short. `effective_at` and `expires_at` are taken and not emulated.
//!
//! Each identifier is a member of its own (`{"email": hash}`, `{"device_id": hash}`): X matches
//! each on its own. Audiences are `CRM` audiences, `TOO_SMALL` (size `null`) under 100 members.
//!
//! Rate: `app.rate("x")` requests per one-second window, per endpoint (X's windows are a minute;
//! the sandbox's are short so that tests are). With a rate, every answer carries
//! `x-rate-limit-limit`, `-remaining` and `-reset` (epoch seconds), and a request past it is HTTP
//! 429 `TOO_MANY_REQUESTS`; without one, there is no limit and no header. Faults as every
//! emulator: the `X-Sandbox-Fault` header and the rates of `FaultConfig` (errors are HTTP 500
//! `INTERNAL_ERROR`, throttles 429 with a spent window's headers). Error bodies are X's
//! `{"errors": [{"code", "message"}], "request": {"params"}}`; codes other than `INTERNAL_ERROR`
//! and `INVALID_PARAMETER` (seen in X's error table) are UNCONFIRMED.

// Checks answer with the platform's error `Response`; a handler returns it as it is.
#![allow(clippy::result_large_err)]

use super::AppState;
use super::faults::Fault;
use super::state::{Audience, MemberBatch, single_key_member};
use crate::destinations::x::config::check_id;
use crate::destinations::x::oauth;
use crate::destinations::x::{MAX_BODY_BYTES, MAX_OPERATIONS, MAX_USERS};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The sandbox's credentials, with the connector (an in-process sandbox is signed for with
/// them, and the connector does not reach into the sandbox).
pub use crate::destinations::x::{
    SANDBOX_ACCESS_TOKEN, SANDBOX_ACCESS_TOKEN_SECRET, SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
};

/// The API versions served: X's current one and the one the official SDK calls.
const VERSIONS: [&str; 2] = ["11", "12"];
/// How far a signature's timestamp may be from the sandbox's clock.
const MAX_CLOCK_SKEW_SECONDS: u64 = 15 * 60;
/// Nonces remembered, the oldest forgotten first.
const MAX_NONCES: usize = 200_000;
/// Audiences whose names begin so answer one user short.
const UNDERCOUNTED: &str = "undercounted";
/// `count` of a listing: X's default and maximum.
const DEFAULT_COUNT: usize = 200;
const MAX_COUNT: usize = 1000;
/// The least matched users to target an audience (X: "at least 100 users").
const TARGETABLE_SIZE: usize = 100;
/// User fields whose values must be SHA-256 in lowercase hex.
const HASHED_FIELDS: [&str; 5] = ["email", "phone_number", "handle", "twitter_id", "device_id"];
/// The user field sent as it is.
const PLAIN_FIELD: &str = "partner_user_id";
/// X's documented rate of the users endpoint, given in a throttle fault's headers when the
/// sandbox has no rate of its own.
const DOCUMENTED_LIMIT: u64 = 1500;

/// The emulator's own state beside the shared store, which holds the audiences' members.
#[derive(Default)]
pub struct XState {
    /// Per endpoint: the epoch second of its window and the requests admitted in it.
    windows: Mutex<HashMap<&'static str, (u64, u64)>>,
    nonces: Mutex<Nonces>,
    /// When each audience was created (ISO 8601), by id.
    created: Mutex<HashMap<String, String>>,
}

/// Nonces taken, so none is taken twice.
#[derive(Default)]
struct Nonces {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Nonces {
    /// Takes a nonce; false if it was taken before.
    fn take(&mut self, nonce: String) -> bool {
        if !self.seen.insert(nonce.clone()) {
            return false;
        }
        self.order.push_back(nonce);
        if self.order.len() > MAX_NONCES
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

impl XState {
    /// Counts a request in its endpoint's window: the rate headers to answer with, or, past the
    /// window's budget, those of the 429.
    fn admit(&self, rate: Option<u64>, endpoint: &'static str) -> Result<HeaderMap, HeaderMap> {
        let Some(limit) = rate else {
            return Ok(HeaderMap::new());
        };
        let second = epoch_seconds();
        let mut windows = self.windows.lock().unwrap();
        let window = windows.entry(endpoint).or_insert((second, 0));
        if window.0 != second {
            *window = (second, 0);
        }
        let admitted = window.1 < limit;
        if admitted {
            window.1 += 1;
        }
        let headers = rate_headers(limit, limit.saturating_sub(window.1), second + 1);
        match admitted {
            true => Ok(headers),
            false => Err(headers),
        }
    }
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn now_iso() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn rate_headers(limit: u64, remaining: u64, reset: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-rate-limit-limit", limit),
        ("x-rate-limit-remaining", remaining),
        ("x-rate-limit-reset", reset),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    headers
}

type Shared = State<(AppState, Arc<XState>)>;

/// The emulator's routes under each version, its state applied.
pub fn routes(app: AppState) -> Router {
    let mut router: Router<(AppState, Arc<XState>)> = Router::new();
    for v in VERSIONS {
        router = router
            .route(&format!("/{v}/accounts/{{account}}"), get(account))
            .route(
                &format!("/{v}/accounts/{{account}}/custom_audiences"),
                get(list_audiences).post(create_audience),
            )
            .route(
                &format!("/{v}/accounts/{{account}}/custom_audiences/{{id}}"),
                get(get_audience),
            )
            .route(
                &format!("/{v}/accounts/{{account}}/custom_audiences/{{id}}/users"),
                post(users),
            );
    }
    router.with_state((app, Arc::new(XState::default())))
}

/// X's error body.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message}], "request": {"params": {}}});
    (status, axum::Json(body)).into_response()
}

fn invalid(app: &AppState, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    error(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", message)
}

fn not_found(app: &AppState, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    error(StatusCode::NOT_FOUND, "NOT_FOUND", message)
}

fn throttled(headers: HeaderMap) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        "Rate limit exceeded: wait for x-rate-limit-reset",
    );
    response.headers_mut().extend(headers);
    response
}

/// A `{data, request}` answer with the rate headers.
fn answer(data: Value, params: Value, rate: HeaderMap) -> Response {
    let mut response =
        axum::Json(json!({"data": data, "request": {"params": params}})).into_response();
    response.headers_mut().extend(rate);
    response
}

/// A request as the gate sees it.
struct Call<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    /// The rate window it counts in.
    endpoint: &'static str,
}

/// `gate`, then the account id of the path checked.
async fn gate_account(
    app: &AppState,
    x: &XState,
    call: Call<'_>,
    account: &str,
) -> Result<(Fault, HeaderMap), Response> {
    let gated = gate(app, x, call).await?;
    check_id(account).map_err(|m| invalid(app, &format!("account_id: {m}")))?;
    Ok(gated)
}

/// Counts the request, injects the fault it draws, checks its signature and its endpoint's rate
/// window: the fault to finish with and the rate headers to answer with, or the answer.
async fn gate(app: &AppState, x: &XState, call: Call<'_>) -> Result<(Fault, HeaderMap), Response> {
    app.store.with(|s| s.requests += 1);
    let fault = app
        .faults
        .decide(
            call.headers
                .get("x-sandbox-fault")
                .and_then(|v| v.to_str().ok()),
        )
        .await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Internal error",
            ));
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            let limit = app.rate("x").unwrap_or(DOCUMENTED_LIMIT);
            return Err(throttled(rate_headers(limit, 0, epoch_seconds() + 1)));
        }
        _ => {}
    }
    if let Err(why) = verify(x, &call) {
        app.store.with(|s| s.rejected += 1);
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED_ACCESS",
            &format!("This request is not properly authenticated: {why}"),
        ));
    }
    match x.admit(app.rate("x"), call.endpoint) {
        Ok(rate) => Ok((fault, rate)),
        Err(rate) => {
            app.store.with(|s| s.rate_limited += 1);
            Err(throttled(rate))
        }
    }
}

/// Checks a request's OAuth 1.0a signature against the sandbox's credentials; why it fails,
/// never quoting a credential.
fn verify(x: &XState, call: &Call<'_>) -> Result<(), &'static str> {
    let header = call
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("no OAuth Authorization header")?;
    let params = oauth::parse_header(header).ok_or("the Authorization header is not OAuth 1.0a")?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("oauth_signature_method") != Some(oauth::SIGNATURE_METHOD) {
        return Err("oauth_signature_method must be HMAC-SHA1");
    }
    if get("oauth_version").is_some_and(|v| v != oauth::VERSION) {
        return Err("oauth_version must be 1.0");
    }
    if get("oauth_consumer_key") != Some(SANDBOX_CONSUMER_KEY) {
        return Err("unknown oauth_consumer_key");
    }
    if get("oauth_token") != Some(SANDBOX_ACCESS_TOKEN) {
        return Err("unknown oauth_token");
    }
    let timestamp = get("oauth_timestamp")
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or("oauth_timestamp: seconds since 1970 are required")?;
    if timestamp.abs_diff(epoch_seconds()) > MAX_CLOCK_SKEW_SECONDS {
        return Err("oauth_timestamp is too far from the server's clock");
    }
    let nonce = get("oauth_nonce")
        .filter(|n| !n.is_empty())
        .ok_or("oauth_nonce is required")?;
    let signature = get("oauth_signature").ok_or("oauth_signature is required")?;
    let expected = expected_signature(call, &params).ok_or("no Host header")?;
    if expected != signature {
        return Err(
            "the signature does not match the request (method, URL, query and oauth parameters) \
             signed with the consumer secret and the token secret",
        );
    }
    if !x
        .nonces
        .lock()
        .unwrap()
        .take(format!("{timestamp}:{nonce}"))
    {
        return Err("oauth_nonce was used before: sign each request afresh");
    }
    Ok(())
}

/// The signature the request should carry: its base URI from the `Host` header and the path,
/// its parameters the header's (less `oauth_signature` and `realm`) and the query's.
fn expected_signature(call: &Call<'_>, params: &[(String, String)]) -> Option<String> {
    let host = call.headers.get(HOST)?.to_str().ok()?.to_ascii_lowercase();
    let host = host.strip_suffix(":80").unwrap_or(&host);
    let base_uri = format!("http://{host}{}", call.uri.path());
    let mut signed: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "oauth_signature" && k != "realm")
        .cloned()
        .collect();
    if let Some(query) = call.uri.query() {
        signed.extend(url::form_urlencoded::parse(query.as_bytes()).into_owned());
    }
    let key = oauth::signing_key(SANDBOX_CONSUMER_SECRET, SANDBOX_ACCESS_TOKEN_SECRET);
    Some(oauth::sign(
        &key,
        &oauth::base_string(call.method.as_str(), &base_uri, &signed),
    ))
}

/// A dropped answer: the request was applied, the client never learns it.
fn finish(app: &AppState, fault: Fault, response: Response) -> Response {
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

/// The account's custom audience `id`, if there is one.
fn custom_audience(app: &AppState, account: &str, id: &str) -> Option<Audience> {
    app.store
        .get(id)
        .filter(|a| a.platform == "x" && a.account == account)
}

fn account_json(account: &str) -> Value {
    json!({
        "id": account,
        "name": format!("Sandbox account {account}"),
        "timezone": "America/Los_Angeles",
        "timezone_switch_at": "2026-01-01T08:00:00Z",
        "approval_status": "ACCEPTED",
        "deleted": false,
        "created_at": "2026-01-01T08:00:00Z",
        "updated_at": "2026-01-01T08:00:00Z",
    })
}

fn audience_json(x: &XState, a: &Audience) -> Value {
    let created = x
        .created
        .lock()
        .unwrap()
        .get(&a.id)
        .cloned()
        .unwrap_or_else(now_iso);
    let targetable = a.size >= TARGETABLE_SIZE;
    // X gives no size for an audience too small to target.
    let size = targetable.then_some(a.size);
    let reasons: &[&str] = if targetable { &[] } else { &["TOO_SMALL"] };
    json!({
        "id": a.id,
        "name": a.name,
        "description": null,
        "audience_type": "CRM",
        "audience_size": size,
        "targetable": targetable,
        "targetable_types": ["CRM", "EXCLUDED_CRM"],
        "reasons_not_targetable": reasons,
        "partner_source": "OTHER",
        "owner_account_id": a.account,
        "permission_level": "READ_WRITE",
        "created_at": created,
        "updated_at": created,
        "deleted": false,
    })
}

/// `GET /{v}/accounts/{account}`.
async fn account(
    State((app, x)): Shared,
    Path(account): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let call = Call {
        method: &method,
        uri: &uri,
        headers: &headers,
        endpoint: "accounts",
    };
    let (fault, rate) = match gate_account(&app, &x, call, &account).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let params = json!({"account_id": account});
    finish(&app, fault, answer(account_json(&account), params, rate))
}

/// `GET …/custom_audiences`, paged.
async fn list_audiences(
    State((app, x)): Shared,
    Path(account): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let call = Call {
        method: &method,
        uri: &uri,
        headers: &headers,
        endpoint: "custom_audiences",
    };
    let (fault, rate) = match gate_account(&app, &x, call, &account).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let count = match q.get("count").map(|c| c.parse::<usize>()) {
        None => DEFAULT_COUNT,
        Some(Ok(n)) if (1..=MAX_COUNT).contains(&n) => n,
        Some(_) => return invalid(&app, &format!("count: 1 to {MAX_COUNT}")),
    };
    let from = match q.get("cursor").map(|c| c.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return invalid(&app, "cursor: pass back a next_cursor this API gave"),
    };
    let prefix = q.get("q").map(|p| p.to_lowercase());
    if prefix
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.chars().count() > 255)
    {
        return invalid(&app, "q: 1 to 255 characters");
    }
    let ids: Option<HashSet<&str>> = q
        .get("custom_audience_ids")
        .map(|ids| ids.split(',').map(str::trim).collect());
    let matching: Vec<Audience> = app
        .store
        .list()
        .into_iter()
        .filter(|a| a.platform == "x" && a.account == account)
        .filter(|a| {
            prefix
                .as_ref()
                .is_none_or(|p| a.name.to_lowercase().starts_with(p))
        })
        .filter(|a| ids.as_ref().is_none_or(|ids| ids.contains(a.id.as_str())))
        .collect();
    let end = from.saturating_add(count);
    let page: Vec<Value> = matching
        .iter()
        .skip(from)
        .take(count)
        .map(|a| audience_json(&x, a))
        .collect();
    let mut body = json!({
        "data": page,
        "next_cursor": (end < matching.len()).then(|| end.to_string()),
        "request": {"params": {"account_id": account}},
    });
    if q.get("with_total_count").is_some_and(|t| t == "true") {
        body["total_count"] = json!(matching.len());
    }
    let mut response = axum::Json(body).into_response();
    response.headers_mut().extend(rate);
    finish(&app, fault, response)
}

/// `POST …/custom_audiences?name=…`.
async fn create_audience(
    State((app, x)): Shared,
    Path(account): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let call = Call {
        method: &method,
        uri: &uri,
        headers: &headers,
        endpoint: "custom_audiences",
    };
    let (fault, rate) = match gate_account(&app, &x, call, &account).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let name = q.get("name").map(|n| n.trim()).unwrap_or_default();
    if name.is_empty() {
        return invalid(&app, "name: required");
    }
    let audience = app.store.create("x", &account, name);
    x.created
        .lock()
        .unwrap()
        .insert(audience.id.clone(), now_iso());
    let params = json!({"account_id": account, "name": name});
    finish(
        &app,
        fault,
        answer(audience_json(&x, &audience), params, rate),
    )
}

/// `GET …/custom_audiences/{id}`.
async fn get_audience(
    State((app, x)): Shared,
    Path((account, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let call = Call {
        method: &method,
        uri: &uri,
        headers: &headers,
        endpoint: "custom_audiences",
    };
    let (fault, rate) = match gate(&app, &x, call).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let Some(audience) = custom_audience(&app, &account, &id) else {
        return not_found(
            &app,
            &format!("custom_audience_id: {id} is not a custom audience of account {account}"),
        );
    };
    let params = json!({"account_id": account, "custom_audience_id": id});
    finish(
        &app,
        fault,
        answer(audience_json(&x, &audience), params, rate),
    )
}

/// The members of a request's operations, grouped in runs of one type in the order sent.
type Runs = Vec<(bool, MemberBatch)>;

/// Checks a users body: its members by runs of Update (true) and Delete (false) and its users;
/// or the answer refusing it: a request-level error, or the operations' errors by place.
fn checked_operations(app: &AppState, body: &[u8]) -> Result<(Runs, usize), Response> {
    let Ok(Value::Array(operations)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid(app, "the body must be a JSON array of operations"));
    };
    if operations.is_empty() || operations.len() > MAX_OPERATIONS {
        return Err(invalid(
            app,
            &format!(
                "{} operations: 1 to {MAX_OPERATIONS} are allowed per request",
                operations.len()
            ),
        ));
    }
    let mut draw_invalid = app.faults.invalid_rows();
    let mut runs: Runs = vec![];
    let mut users = 0usize;
    let mut errors: Vec<Value> = Vec::with_capacity(operations.len());
    for operation in &operations {
        let checked = checked_operation(operation, &mut draw_invalid);
        match checked {
            Ok((update, members, count)) => {
                users += count;
                errors.push(json!([]));
                if runs.last().is_some_and(|run| run.0 == update) {
                    if let Some(run) = runs.last_mut() {
                        run.1.append(&members);
                    }
                } else {
                    runs.push((update, members));
                }
            }
            Err(message) => errors.push(json!([{"code": "INVALID_PARAMETER", "message": message}])),
        }
    }
    app.store
        .with(|s| s.max_rows_per_request = s.max_rows_per_request.max(users as u64));
    let refused = errors
        .iter()
        .filter(|e| e.as_array().is_some_and(|e| !e.is_empty()))
        .count();
    if refused > 0 {
        app.store.with(|s| s.rejected += 1);
        let body = json!({
            "errors": [{"code": "INVALID_PARAMETER", "message": format!("{refused} operations have errors: see operation_errors")}],
            "operation_errors": errors,
            "request": {"params": {}},
        });
        return Err((StatusCode::BAD_REQUEST, axum::Json(body)).into_response());
    }
    if users > MAX_USERS {
        return Err(invalid(
            app,
            &format!("{users} users: at most {MAX_USERS} are allowed per request"),
        ));
    }
    Ok((runs, users))
}

/// One operation: whether it updates, its members and users; or its error, by place.
fn checked_operation(
    operation: &Value,
    draw_invalid: &mut impl FnMut() -> bool,
) -> Result<(bool, MemberBatch, usize), String> {
    let update = match operation["operation_type"].as_str() {
        Some("Update") => true,
        Some("Delete") => false,
        _ => return Err("operation_type: Update or Delete".into()),
    };
    let params = &operation["params"];
    for time in ["effective_at", "expires_at"] {
        if !(params[time].is_null() || params[time].is_string()) {
            return Err(format!(
                "params.{time}: a time such as 2026-11-25T00:00:00Z"
            ));
        }
    }
    let users = match params["users"].as_array() {
        Some(users) if !users.is_empty() => users,
        _ => return Err("params.users: at least one user is required".into()),
    };
    let mut members = MemberBatch::default();
    for (u, user) in users.iter().enumerate() {
        let fields = match user.as_object() {
            Some(fields) if !fields.is_empty() => fields,
            _ => return Err(format!("params.users[{u}]: an object of user identifiers")),
        };
        if draw_invalid() {
            return Err(format!("params.users[{u}]: invalid user"));
        }
        for (field, values) in fields {
            let hashed = HASHED_FIELDS.contains(&field.as_str());
            if !hashed && field != PLAIN_FIELD {
                return Err(format!(
                    "params.users[{u}].{field}: not a user identifier (email, phone_number, handle, twitter_id, device_id, partner_user_id)"
                ));
            }
            let values = match values.as_array() {
                Some(values) if !values.is_empty() => values,
                _ => return Err(format!("params.users[{u}].{field}: an array of values")),
            };
            for (i, value) in values.iter().enumerate() {
                let text = value.as_str().unwrap_or_default();
                let ok = match hashed {
                    true => is_sha256_hex(text),
                    false => !text.trim().is_empty(),
                };
                if !ok {
                    return Err(format!(
                        "params.users[{u}].{field}[{i}]: {}",
                        match hashed {
                            true =>
                                "not a SHA-256 in lowercase hex (every identifier but partner_user_id is hashed)",
                            false => "an id is required",
                        }
                    ));
                }
                members.push(&single_key_member(field, text));
            }
        }
    }
    Ok((update, members, users.len()))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `POST …/custom_audiences/{id}/users`.
async fn users(
    State((app, x)): Shared,
    Path((account, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        method: &method,
        uri: &uri,
        headers: &headers,
        endpoint: "users",
    };
    let (fault, rate) = match gate(&app, &x, call).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
    let Some(audience) = custom_audience(&app, &account, &id) else {
        return not_found(
            &app,
            &format!("custom_audience_id: {id} is not a custom audience of account {account}"),
        );
    };
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return invalid(&app, "Content-Type must be application/json");
    }
    if body.len() > MAX_BODY_BYTES {
        return invalid(
            &app,
            &format!(
                "the body is {} bytes: at most {MAX_BODY_BYTES} are allowed",
                body.len()
            ),
        );
    }
    let (runs, users) = match checked_operations(&app, &body) {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let counted = match audience.name.starts_with(UNDERCOUNTED) {
        true => users.saturating_sub(1),
        false => {
            for (update, members) in runs {
                app.store.apply(&audience.id, None, update, members, false);
            }
            users
        }
    };
    let data = json!({"success_count": counted, "total_count": users});
    let params = json!({"account_id": account, "custom_audience_id": id});
    finish(&app, fault, answer(data, params, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_taken_once_and_the_oldest_are_forgotten() {
        let mut nonces = Nonces::default();
        assert!(nonces.take("1:a".into()));
        assert!(!nonces.take("1:a".into()));
        for i in 0..MAX_NONCES {
            assert!(nonces.take(format!("2:{i}")));
        }
        assert!(nonces.take("1:a".into()), "forgotten after MAX_NONCES more");
        assert_eq!(nonces.seen.len(), MAX_NONCES);
    }

    #[test]
    fn a_window_admits_its_budget_and_says_what_is_left() {
        let x = XState::default();
        assert!(x.admit(None, "users").unwrap().is_empty());
        let first = x.admit(Some(2), "users").unwrap();
        assert_eq!(first["x-rate-limit-limit"], "2");
        assert_eq!(first["x-rate-limit-remaining"], "1");
        // A window may end between the calls; then the next starts afresh.
        let second = x.admit(Some(2), "users").unwrap();
        let reset: u64 = second["x-rate-limit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset > epoch_seconds().saturating_sub(1));
        let third = x.admit(Some(2), "users");
        if let Err(spent) = third {
            assert_eq!(spent["x-rate-limit-remaining"], "0");
        }
        assert!(x.admit(Some(2), "custom_audiences").is_ok(), "per endpoint");
    }

    #[test]
    fn operations_are_checked_by_place_and_never_quote_values() {
        let hash = "0123456789abcdef".repeat(4);
        let mut never = || false;
        let ok = json!({"operation_type": "Update", "params": {"users": [
            {"email": [hash], "device_id": [hash]}, {"partner_user_id": ["crm-7"]}
        ]}});
        let (update, members, users) = checked_operation(&ok, &mut never).unwrap();
        assert!(update);
        assert_eq!((members.len(), users), (3, 2));
        let upper = hash.to_uppercase();
        for (operation, said) in [
            (
                json!({"operation_type": "Add", "params": {"users": [{"email": [hash]}]}}),
                "operation_type",
            ),
            (
                json!({"operation_type": "Delete", "params": {"users": []}}),
                "params.users",
            ),
            (
                json!({"operation_type": "Delete", "params": {"users": [{"email": [upper]}]}}),
                "params.users[0].email[0]",
            ),
            (
                json!({"operation_type": "Delete", "params": {"users": [{"mail": [hash]}]}}),
                "params.users[0].mail",
            ),
            (
                json!({"operation_type": "Delete", "params": {"users": [{"email": hash}]}}),
                "params.users[0].email",
            ),
        ] {
            let message = checked_operation(&operation, &mut never).unwrap_err();
            assert!(message.starts_with(said), "{message}");
            assert!(
                !message.contains(&hash) && !message.contains(&upper),
                "{message}"
            );
        }
    }
}
