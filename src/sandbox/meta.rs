//! Meta Graph API emulator: customer-file custom audiences (shared/spec/platforms.md §1).
//!
//! Paths, encodings and errors as the Graph API has them: `POST /v25.0/act_{id}/customaudiences`,
//! `POST|DELETE /v25.0/{audience}/users`, `POST /v25.0/{audience}/usersreplace`, bodies
//! form-encoded with `payload` and `session` as JSON strings (or JSON), `access_token` in the
//! query, the body or a bearer header; errors as `{"error": {message, type, code,
//! error_subcode, fbtrace_id}}`; the `X-Business-Use-Case-Usage` header on every call and error
//! 80003 when the call budget of the rolling window is spent.

use super::AppState;
use super::faults::Fault;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rows per request the API accepts.
pub const MAX_ROWS: usize = 10_000;

const MULTI_KEYS: &[&str] = &[
    "EXTERN_ID",
    "EMAIL",
    "PHONE",
    "GEN",
    "DOBY",
    "DOBM",
    "DOBD",
    "LN",
    "FN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "MADID",
    "COUNTRY",
];
const SINGLE_KEYS: &[(&str, &str)] = &[
    ("EMAIL_SHA256", "EMAIL"),
    ("PHONE_SHA256", "PHONE"),
    ("MOBILE_ADVERTISER_ID", "MADID"),
    ("EXTERN_ID", "EXTERN_ID"),
];

/// The call budget (Business Use Case rate limit); `None` turns throttling off.
#[derive(Clone, Debug)]
pub struct MetaLimits {
    pub calls_per_window: Option<u64>,
    pub window: Duration,
}

impl Default for MetaLimits {
    fn default() -> MetaLimits {
        MetaLimits {
            calls_per_window: None,
            window: Duration::from_secs(3600),
        }
    }
}

#[derive(Default)]
pub struct MetaState {
    pub limits: Mutex<MetaLimits>,
    calls: Mutex<VecDeque<Instant>>,
    sessions: Mutex<HashMap<(String, u64), Session>>,
}

#[derive(Default)]
struct Session {
    received: u64,
    finished: bool,
    replace: bool,
    /// Members gathered by a replace session, swapped in when it finishes.
    replacement: BTreeSet<String>,
    started: Option<Instant>,
}

fn error(
    status: StatusCode,
    code: u64,
    subcode: Option<u64>,
    message: &str,
    transient: bool,
) -> Response {
    let mut e = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AsandboxTRACE",
    });
    if let Some(s) = subcode {
        e["error_subcode"] = s.into();
    }
    if transient {
        e["is_transient"] = true.into();
    }
    (status, axum::Json(json!({ "error": e }))).into_response()
}

fn bad_param(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        100,
        None,
        &format!("(#100) {message}"),
        false,
    )
}

/// Query, form and JSON parameters merged; JSON values other than strings kept as JSON text.
fn params(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> HashMap<String, String> {
    let mut p = query.clone();
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in map {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                p.insert(k, s);
            }
        }
    } else if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
        p.extend(pairs);
    }
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Some(token) = auth.strip_prefix("Bearer ")
    {
        p.entry("access_token".into())
            .or_insert_with(|| token.to_string());
    }
    p
}

impl MetaState {
    /// Counts a call against the budget; returns the usage percentage, or an error if spent.
    fn count_call(&self) -> Result<u64, u64> {
        let limits = self.limits.lock().unwrap().clone();
        let Some(budget) = limits.calls_per_window else {
            return Ok(0);
        };
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap();
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) > limits.window)
        {
            calls.pop_front();
        }
        if calls.len() as u64 >= budget {
            let wait = calls
                .front()
                .map(|t| limits.window.saturating_sub(now.duration_since(*t)))
                .unwrap_or_default();
            // Meta counts in whole minutes; windows shorter than a minute (tests) say 0.
            return Err(wait.as_secs() / 60);
        }
        calls.push_back(now);
        Ok(calls.len() as u64 * 100 / budget.max(1))
    }
}

fn usage_header(percent: u64, regain_minutes: u64) -> String {
    json!({
        "sandbox-business": [{
            "type": "custom_audience",
            "call_count": percent,
            "total_cputime": percent / 2,
            "total_time": percent / 2,
            "estimated_time_to_regain_access": regain_minutes,
            "ads_api_access_tier": "standard_access",
        }]
    })
    .to_string()
}

/// Error 80003 (custom audience rate limit) with the usage header saying when access returns.
fn throttled(regain_minutes: u64) -> Response {
    let mut r = error(
        StatusCode::BAD_REQUEST,
        80003,
        Some(2446079),
        "There have been too many calls to this ad-account. Wait a bit and try again.",
        true,
    );
    r.headers_mut().insert(
        "x-business-use-case-usage",
        usage_header(100, regain_minutes).parse().unwrap(),
    );
    r
}

pub async fn graph(
    State(app): State<AppState>,
    Path((version, rest)): Path<(String, String)>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.store.with(|s| s.requests += 1);
    let meta = &app.meta;
    if !version.starts_with('v') {
        return error(
            StatusCode::BAD_REQUEST,
            2500,
            None,
            "Unknown path components",
            false,
        );
    }
    let fault = app
        .faults
        .decide(headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()))
        .await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                2,
                None,
                "An unexpected error has occurred. Please retry your request later.",
                true,
            );
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return throttled(0);
        }
        Fault::Drop | Fault::None => {}
    }
    let usage = match meta.count_call() {
        Ok(u) => u,
        Err(minutes) => {
            app.store.with(|s| s.rate_limited += 1);
            return throttled(minutes);
        }
    };
    let p = params(&query, &headers, &body);
    if p.get("access_token").is_none_or(|t| t.is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            190,
            None,
            "An active access token must be used to query information about the current user.",
            false,
        );
    }
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = match (
        method.clone(),
        p.get("method").map(|m| m.to_ascii_uppercase()),
    ) {
        (Method::POST, Some(m)) if m == "DELETE" => Method::DELETE,
        (m, _) => m,
    };
    let mut response = match (method, parts.as_slice()) {
        (Method::GET, [node, "customaudiences"]) if node.starts_with("act_") => {
            let account = &node[4..];
            let data: Vec<Value> = app
                .store
                .list()
                .into_iter()
                .filter(|a| a.platform == "meta" && a.account == account)
                .map(|a| json!({"id": a.id, "name": a.name}))
                .collect();
            axum::Json(json!({ "data": data, "paging": {} })).into_response()
        }
        (Method::POST, [node, "customaudiences"]) if node.starts_with("act_") => {
            create_audience(&app, &node[4..], &p)
        }
        (Method::GET, [id]) => match app.store.get(id) {
            Some(a) if a.platform == "meta" => axum::Json(json!({
                "id": a.id, "name": a.name,
                "approximate_count_lower_bound": a.size, "approximate_count_upper_bound": a.size,
                "operation_status": {"code": 200, "description": "Normal"},
            }))
            .into_response(),
            _ => error(
                StatusCode::BAD_REQUEST,
                100,
                Some(33),
                "Unsupported get request. Object does not exist",
                false,
            ),
        },
        (Method::POST, [id, "users"]) => upload(&app, id, &p, Upload::Add),
        (Method::DELETE, [id, "users"]) => upload(&app, id, &p, Upload::Remove),
        (Method::POST, [id, "usersreplace"]) => upload(&app, id, &p, Upload::Replace),
        _ => error(
            StatusCode::BAD_REQUEST,
            2500,
            None,
            "Unknown path components",
            false,
        ),
    };
    response.headers_mut().insert(
        "x-business-use-case-usage",
        usage_header(usage, 0).parse().unwrap(),
    );
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

fn create_audience(app: &AppState, account: &str, p: &HashMap<String, String>) -> Response {
    let Some(name) = p.get("name").filter(|n| !n.is_empty()) else {
        return bad_param("The parameter name is required");
    };
    if p.get("subtype").map(String::as_str) != Some("CUSTOM") {
        return bad_param("Param subtype must be CUSTOM for a customer file audience");
    }
    let sources = [
        "USER_PROVIDED_ONLY",
        "PARTNER_PROVIDED_ONLY",
        "BOTH_USER_AND_PARTNER_PROVIDED",
    ];
    if !p
        .get("customer_file_source")
        .is_some_and(|s| sources.contains(&s.as_str()))
    {
        return bad_param(
            "Param customer_file_source must be one of {USER_PROVIDED_ONLY, PARTNER_PROVIDED_ONLY, BOTH_USER_AND_PARTNER_PROVIDED}",
        );
    }
    let a = app.store.create("meta", account, name);
    axum::Json(json!({ "id": a.id })).into_response()
}

#[derive(Clone, Copy, PartialEq)]
enum Upload {
    Add,
    Remove,
    Replace,
}

fn valid_value(key: &str, v: &str) -> bool {
    match key {
        "EXTERN_ID" => true,
        "MADID" => {
            v.len() == 36
                && v.bytes()
                    .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        _ => {
            v.len() == 64
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
    }
}

fn upload(app: &AppState, id: &str, p: &HashMap<String, String>, kind: Upload) -> Response {
    app.store.with(|s| s.upload_requests += 1);
    let Some(audience) = app.store.get(id).filter(|a| a.platform == "meta") else {
        app.store.with(|s| s.rejected += 1);
        return error(
            StatusCode::BAD_REQUEST,
            100,
            Some(33),
            "Unsupported post request. Object does not exist",
            false,
        );
    };
    let Some(payload) = p
        .get("payload")
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    else {
        app.store.with(|s| s.rejected += 1);
        return bad_param("The parameter payload is required and must be JSON");
    };
    // The schema: one key, or a multi-key list.
    let schema: Vec<String> = match &payload["schema"] {
        Value::String(s) => match SINGLE_KEYS.iter().find(|(k, _)| k == s) {
            Some((_, key)) => vec![key.to_string()],
            None => return bad_param(&format!("Invalid schema {s}")),
        },
        Value::Array(keys) => {
            let mut out = vec![];
            for k in keys {
                match k.as_str() {
                    Some(k) if MULTI_KEYS.contains(&k) => out.push(k.to_string()),
                    _ => return bad_param(&format!("Invalid key {k} in schema")),
                }
            }
            out
        }
        _ => return bad_param("payload.schema is required"),
    };
    let Some(data) = payload["data"].as_array() else {
        return bad_param("payload.data must be an array");
    };
    app.store
        .with(|s| s.max_rows_per_request = s.max_rows_per_request.max(data.len() as u64));
    if data.len() > MAX_ROWS {
        app.store.with(|s| s.rejected += 1);
        return bad_param(&format!(
            "The number of users in the payload exceeds the limit of {MAX_ROWS}"
        ));
    }
    let session = p
        .get("session")
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let session_id = session.as_ref().and_then(|s| s["session_id"].as_u64());
    let batch_seq = session.as_ref().and_then(|s| s["batch_seq"].as_u64());
    let last = session
        .as_ref()
        .and_then(|s| s["last_batch_flag"].as_bool())
        .unwrap_or(false);
    if kind == Upload::Replace && (session_id.is_none() || batch_seq.is_none()) {
        return bad_param("usersreplace requires session with session_id and batch_seq");
    }

    // Rows to canonical members; invalid rows counted, with samples.
    let mut members = vec![];
    let mut invalid = 0u64;
    let mut samples = serde_json::Map::new();
    for row in data {
        let values: Vec<String> = match row {
            Value::Array(v) => v
                .iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect(),
            Value::String(s) if schema.len() == 1 => vec![s.clone()],
            _ => vec![],
        };
        let mut member = BTreeMap::new();
        let mut ok = values.len() == schema.len();
        if ok {
            for (k, v) in schema.iter().zip(&values) {
                if v.is_empty() {
                    continue;
                }
                if !valid_value(k, v) {
                    ok = false;
                    break;
                }
                member.insert(k.clone(), v.clone());
            }
        }
        if ok && !member.is_empty() && app.faults.invalid_row() {
            ok = false;
        }
        if !ok || member.is_empty() {
            invalid += 1;
            if samples.len() < 100 {
                samples.insert(
                    format!("{}", samples.len()),
                    Value::String("invalid or badly hashed row".into()),
                );
            }
            continue;
        }
        members.push(serde_json::to_string(&member).unwrap());
    }

    let mut received = data.len() as u64;
    if let (Some(sid), Some(seq)) = (session_id, batch_seq) {
        let mut sessions = app.meta.sessions.lock().unwrap();
        let key = (id.to_string(), sid);
        let new = !sessions.contains_key(&key);
        let s = sessions.entry(key.clone()).or_default();
        if new {
            app.store.with(|st| st.sessions += 1);
            s.replace = kind == Upload::Replace;
            s.started = Some(Instant::now());
        }
        if s.finished {
            app.store.with(|st| st.rejected += 1);
            return error(
                StatusCode::BAD_REQUEST,
                2650,
                Some(1870159),
                "The session has already finished: last_batch_flag was sent",
                false,
            );
        }
        if kind == Upload::Replace {
            if new && seq != 1 {
                sessions.remove(&key);
                app.store.with(|st| st.rejected += 1);
                return error(
                    StatusCode::BAD_REQUEST,
                    2650,
                    Some(1870147),
                    "The first batch of a replace session must have batch_seq 1",
                    false,
                );
            }
            if s.started
                .is_some_and(|t| t.elapsed() > Duration::from_secs(90 * 60))
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    2650,
                    Some(1870158),
                    "The replace session timed out",
                    false,
                );
            }
            s.replacement.extend(members.iter().cloned());
        }
        s.received += data.len() as u64;
        received = s.received;
        if last {
            s.finished = true;
        }
        let replacement =
            (kind == Upload::Replace && last).then(|| std::mem::take(&mut s.replacement));
        drop(sessions);
        if kind != Upload::Replace {
            app.store.apply(
                id,
                Some((sid.to_string(), seq)),
                kind == Upload::Add,
                members,
                false,
            );
        } else {
            app.store
                .apply(id, Some((sid.to_string(), seq)), true, vec![], false);
        }
        if let Some(r) = replacement {
            app.store.set_members(id, r);
        }
    } else {
        if kind == Upload::Replace {
            return bad_param("usersreplace requires a session");
        }
        app.store
            .apply(id, None, kind == Upload::Add, members, false);
    }
    let mut body = json!({
        "audience_id": audience.id,
        "session_id": session_id.map(|s| s.to_string()).unwrap_or_default(),
        "num_received": received,
        "num_invalid_entries": invalid,
        "invalid_entry_samples": samples,
    });
    if kind == Upload::Replace {
        body["account_id"] = audience.account.clone().into();
        body.as_object_mut().unwrap().remove("audience_id");
    }
    axum::Json(body).into_response()
}
