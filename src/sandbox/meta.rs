//! Meta Graph API emulator: customer-file custom audiences (shared/spec/platforms.md §1).
//!
//! Paths, encodings and errors as the Graph API has them: `POST /v25.0/act_{id}/customaudiences`,
//! `POST|DELETE /v25.0/{audience}/users`, `POST /v25.0/{audience}/usersreplace`, bodies
//! form-encoded with `payload` and `session` as JSON strings (or JSON), `access_token` in the
//! query, the body or a bearer header; errors as `{"error": {message, type, code,
//! error_subcode, fbtrace_id}}`; the `X-Business-Use-Case-Usage` header on every call and error
//! 80003 when the call budget of the rolling window is spent.

// Checks answer with the platform's error `Response`; a handler returns it as it is.
#![allow(clippy::result_large_err)]

mod fast;

use super::AppState;
use super::Cell;
use super::faults::Fault;
use super::state::{MemberBatch, packed_key, push_member_value, push_packed_hash};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
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
    replacement: MemberBatch,
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

/// Parameters: query, form or JSON body, and a bearer token, merged. A JSON value that is not a
/// string (a `payload` object) is kept as its JSON text, borrowed from the body: a payload is
/// megabytes, and parsing it into a tree only to print it again cost more than the upload.
type Params<'a> = HashMap<String, Cow<'a, str>>;

fn params<'a>(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &'a Bytes,
) -> (Params<'a>, Option<Payload<'a>>) {
    let mut p: Params<'a> = query
        .iter()
        .map(|(k, v)| (k.clone(), Cow::Owned(v.clone())))
        .collect();
    let mut inline = None;
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        // Checked as UTF-8 once here, so the parser need not check every string it borrows.
        let text = simdutf8::basic::from_utf8(body).unwrap_or_default();
        // Bodies in the shape clients write them by the fast reader, others by serde.
        let body = fast::body(text).or_else(|| serde_json::from_str::<JsonBody>(text).ok());
        if let Some(body) = body {
            p.extend(body.params);
            inline = body.payload;
        }
    } else if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
        p.extend(pairs.into_iter().map(|(k, v)| (k, Cow::Owned(v))));
    }
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Some(token) = auth.strip_prefix("Bearer ")
    {
        p.entry("access_token".into())
            .or_insert_with(|| Cow::Owned(token.to_string()));
    }
    (p, inline)
}

/// A JSON body read in one pass: a `payload` object straight into a `Payload`, every other
/// parameter as its text (a string unescaped, any other value as its JSON).
struct JsonBody<'a> {
    params: Params<'a>,
    payload: Option<Payload<'a>>,
}

impl<'de> Deserialize<'de> for JsonBody<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonBody<'de>, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = JsonBody<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonBody<'de>, A::Error> {
                let mut body = JsonBody {
                    params: Params::new(),
                    payload: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "payload" {
                        match map.next_value::<PayloadParam<'de>>()? {
                            PayloadParam::Parsed(p) => body.payload = Some(p),
                            PayloadParam::Text(t) => {
                                body.params.insert(key, t);
                            }
                        }
                    } else {
                        let raw: &'de RawValue = map.next_value()?;
                        body.params.insert(key, raw_text(raw.get()));
                    }
                }
                Ok(body)
            }
        }
        d.deserialize_map(BodyVisitor)
    }
}

/// A JSON parameter's text: a string unescaped (borrowed when it has no escapes), any other
/// value as its JSON.
fn raw_text(text: &str) -> Cow<'_, str> {
    if !text.starts_with('"') {
        return Cow::Borrowed(text);
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(serde_json::from_str::<String>(text).unwrap_or_default()),
    }
}

/// `payload` as a JSON body has it: an object, read in place, or a string of JSON.
enum PayloadParam<'a> {
    Parsed(Payload<'a>),
    Text(Cow<'a, str>),
}

impl<'de> Deserialize<'de> for PayloadParam<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PayloadParam<'de>, D::Error> {
        struct PayloadVisitor;
        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = PayloadParam<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a payload object or string")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PayloadParam<'de>, A::Error> {
                Payload::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(PayloadParam::Parsed)
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<PayloadParam<'de>, E> {
                Ok(PayloadParam::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<PayloadParam<'de>, E> {
                Ok(PayloadParam::Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(PayloadVisitor)
    }
}

/// `payload`, parsed without a tree: cells borrow from the request.
#[derive(serde::Deserialize)]
struct Payload<'a> {
    #[serde(default)]
    schema: Value,
    #[serde(borrow, default)]
    data: Option<Rows<'a>>,
}

/// The `data` rows, their cells end to end in one list: a 10,000-row request costs one
/// growing list rather than a `Vec` per row.
#[derive(Default)]
struct Rows<'a> {
    cells: Vec<Cell<'a>>,
    rows: Vec<RowShape>,
}

/// What a `data` row was: a list of cells (multi-key, or a one-element list) ending at `cells`
/// index `end`, a bare value (single key), or something else (invalid).
#[derive(Clone, Copy, Debug)]
enum RowShape {
    Many { end: usize },
    One { at: usize },
    Other,
}

impl<'a> Rows<'a> {
    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Each row's cells: a list's, a bare value as one cell, none for anything else.
    fn iter(&self) -> impl Iterator<Item = (RowShape, &[Cell<'a>])> {
        let mut start = 0;
        self.rows.iter().map(move |&shape| match shape {
            RowShape::Many { end } => {
                let cells = &self.cells[start..end];
                start = end;
                (shape, cells)
            }
            RowShape::One { at } => {
                start = at + 1;
                (shape, &self.cells[at..at + 1])
            }
            RowShape::Other => (shape, &self.cells[0..0]),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Rows<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rows<'a>, D::Error> {
        struct RowsVisitor;
        impl<'de> Visitor<'de> for RowsVisitor {
            type Value = Rows<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of rows")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rows<'de>, A::Error> {
                let mut rows = Rows::default();
                while let Some(shape) = seq.next_element_seed(RowSeed(&mut rows.cells))? {
                    rows.rows.push(shape);
                }
                Ok(rows)
            }
        }
        d.deserialize_seq(RowsVisitor)
    }
}

/// Reads one row, appending its cells to the shared list.
struct RowSeed<'b, 'de>(&'b mut Vec<Cell<'de>>);

impl<'de> serde::de::DeserializeSeed<'de> for RowSeed<'_, 'de> {
    type Value = RowShape;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RowShape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, 'de> {
    type Value = RowShape;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RowShape, A::Error> {
        while let Some(c) = seq.next_element::<Cell<'de>>()? {
            self.0.push(c);
        }
        Ok(RowShape::Many { end: self.0.len() })
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<RowShape, E> {
        self.0.push(Cell(Some(Cow::Borrowed(v))));
        Ok(RowShape::One {
            at: self.0.len() - 1,
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<RowShape, E> {
        self.0.push(Cell(Some(Cow::Owned(v.to_string()))));
        Ok(RowShape::One {
            at: self.0.len() - 1,
        })
    }
    fn visit_bool<E>(self, _: bool) -> Result<RowShape, E> {
        Ok(RowShape::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<RowShape, E> {
        Ok(RowShape::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<RowShape, E> {
        Ok(RowShape::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<RowShape, E> {
        Ok(RowShape::Other)
    }
    fn visit_unit<E>(self) -> Result<RowShape, E> {
        Ok(RowShape::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowShape, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RowShape::Other)
    }
}

/// A payload schema's keys in the order members list them (as `serde_json` prints a
/// `BTreeMap`), each with its column in a row and its packed form (`packed_key`).
fn member_keys<'a>(schema: &[&'a str]) -> Vec<(&'a str, usize, Vec<u8>)> {
    let mut keys: Vec<_> = schema
        .iter()
        .zip(0..)
        .map(|(&key, i)| (key, i, packed_key(key)))
        .collect();
    keys.sort_unstable();
    keys
}

/// Writes a member as the store keeps it: `{"KEY":"value",...}` with its keys in order, as
/// `serde_json` prints a `BTreeMap`, its values packed. False if a value is badly hashed, a raw
/// value is badly shaped, or no value is present.
fn canonical_member(keys: &[(&str, usize, Vec<u8>)], values: &[&str], m: &mut Vec<u8>) -> bool {
    let start = m.len();
    m.push(b'{');
    for (key, i, packed_key) in keys {
        let (key, i) = (*key, *i);
        let v = values[i];
        if v.is_empty() {
            continue;
        }
        if m.len() > start + 1 {
            m.push(b',');
        }
        m.extend_from_slice(packed_key);
        match key {
            // Raw values: stored as JSON strings.
            "EXTERN_ID" | "MADID" => {
                if !valid_raw_value(key, v) {
                    return false;
                }
                push_member_value(m, v);
            }
            // Hashes: checked as they are packed.
            _ => {
                if !push_packed_hash(m, v) {
                    return false;
                }
            }
        }
    }
    m.push(b'}');
    m.len() > start + 2
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
    if let Some(response) = injected(&app, fault) {
        return response;
    }
    let usage = match meta.count_call() {
        Ok(u) => u,
        Err(minutes) => {
            app.store.with(|s| s.rate_limited += 1);
            return throttled(minutes);
        }
    };
    let (p, inline) = params(&query, &headers, &body);
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
            list_audiences(&app, &node[4..])
        }
        (Method::POST, [node, "customaudiences"]) if node.starts_with("act_") => {
            create_audience(&app, &node[4..], &p)
        }
        (Method::GET, [id]) => get_audience(&app, id),
        (Method::POST, [id, "users"]) => upload(&app, id, &p, inline, Upload::Add),
        (Method::DELETE, [id, "users"]) => upload(&app, id, &p, inline, Upload::Remove),
        (Method::POST, [id, "usersreplace"]) => upload(&app, id, &p, inline, Upload::Replace),
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

/// The answer of an injected error or throttle, which the call gets instead of its own.
fn injected(app: &AppState, fault: Fault) -> Option<Response> {
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                2,
                None,
                "An unexpected error has occurred. Please retry your request later.",
                true,
            ))
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            Some(throttled(0))
        }
        Fault::Drop | Fault::None => None,
    }
}

/// `GET act_{account}/customaudiences`: the account's audiences, in one page.
fn list_audiences(app: &AppState, account: &str) -> Response {
    let data: Vec<Value> = app
        .store
        .list()
        .into_iter()
        .filter(|a| a.platform == "meta" && a.account == account)
        .map(|a| json!({"id": a.id, "name": a.name}))
        .collect();
    axum::Json(json!({ "data": data, "paging": {} })).into_response()
}

/// `GET {id}`: an audience with its approximate size.
fn get_audience(app: &AppState, id: &str) -> Response {
    match app.store.get(id) {
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
    }
}

fn create_audience(app: &AppState, account: &str, p: &Params) -> Response {
    let Some(name) = p.get("name").filter(|n| !n.is_empty()) else {
        return bad_param("The parameter name is required");
    };
    if p.get("subtype").map(|s| s.as_ref()) != Some("CUSTOM") {
        return bad_param("Param subtype must be CUSTOM for a customer file audience");
    }
    let sources = [
        "USER_PROVIDED_ONLY",
        "PARTNER_PROVIDED_ONLY",
        "BOTH_USER_AND_PARTNER_PROVIDED",
    ];
    if !p
        .get("customer_file_source")
        .is_some_and(|s| sources.contains(&s.as_ref()))
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

/// Whether a raw (unhashed) value has the shape its key needs: any external id; a device id
/// in lowercase (hex digits and dashes, 36 characters). No other key is sent raw.
fn valid_raw_value(key: &str, v: &str) -> bool {
    match key {
        "EXTERN_ID" => true,
        "MADID" => {
            v.len() == 36
                && v.bytes().fold(true, |ok, b| {
                    ok & (b.is_ascii_digit() | (b'a'..=b'f').contains(&b) | (b == b'-'))
                })
        }
        _ => false,
    }
}

fn upload<'a>(
    app: &AppState,
    id: &str,
    p: &'a Params,
    inline: Option<Payload<'a>>,
    kind: Upload,
) -> Response {
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
    let payload = inline.or_else(|| {
        p.get("payload")
            .and_then(|s| serde_json::from_str::<Payload>(s).ok())
    });
    let Some(payload) = payload else {
        app.store.with(|s| s.rejected += 1);
        return bad_param("The parameter payload is required and must be JSON");
    };
    let schema = match payload_keys(&payload.schema) {
        Ok(schema) => schema,
        Err(refused) => return refused,
    };
    let Some(data) = payload.data else {
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
    if kind == Upload::Replace && (session_id.is_none() || batch_seq.is_none()) {
        return bad_param("usersreplace requires session with session_id and batch_seq");
    }
    let rows = canonical_rows(app, &schema, &data);
    let received = match (session_id, batch_seq, &session) {
        (Some(sid), Some(seq), Some(session)) => {
            let batch = SessionBatch {
                id,
                sid,
                seq,
                session,
                kind,
                rows: data.len() as u64,
            };
            match apply_in_session(app, batch, rows.members) {
                Ok(received) => received,
                Err(refused) => return refused,
            }
        }
        _ => {
            app.store
                .apply(id, None, kind == Upload::Add, rows.members, false);
            data.len() as u64
        }
    };
    let mut body = json!({
        "audience_id": audience.id,
        "session_id": session_id.map(|s| s.to_string()).unwrap_or_default(),
        "num_received": received,
        "num_invalid_entries": rows.invalid,
        "invalid_entry_samples": rows.samples,
    });
    if kind == Upload::Replace {
        body["account_id"] = audience.account.clone().into();
        body.as_object_mut().unwrap().remove("audience_id");
    }
    axum::Json(body).into_response()
}

/// The keys of a payload's schema: one key by its single-key name, or a multi-key list; Meta's
/// refusal otherwise.
fn payload_keys(schema: &Value) -> Result<Vec<&'static str>, Response> {
    match schema {
        Value::String(s) => match SINGLE_KEYS.iter().find(|(k, _)| k == s) {
            Some((_, key)) => Ok(vec![*key]),
            None => Err(bad_param(&format!("Invalid schema {s}"))),
        },
        Value::Array(keys) => keys
            .iter()
            .map(
                |k| match MULTI_KEYS.iter().find(|m| Some(**m) == k.as_str()) {
                    Some(k) => Ok(*k),
                    None => Err(bad_param(&format!("Invalid key {k} in schema"))),
                },
            )
            .collect(),
        _ => Err(bad_param("payload.schema is required")),
    }
}

/// A request's rows as canonical members, and the rows refused (with up to 100 samples).
struct CanonicalRows {
    members: MemberBatch,
    invalid: u64,
    samples: serde_json::Map<String, Value>,
}

fn canonical_rows(app: &AppState, schema: &[&str], data: &Rows) -> CanonicalRows {
    let sorted_keys = member_keys(schema);
    let mut rows = CanonicalRows {
        members: MemberBatch::with_capacity(data.len(), data.len() * (2 + schema.len() * 80)),
        invalid: 0,
        samples: serde_json::Map::new(),
    };
    let mut values: Vec<&str> = Vec::with_capacity(schema.len());
    let mut invalid_row = app.faults.invalid_rows();
    for (shape, cells) in data.iter() {
        values.clear();
        match shape {
            RowShape::Many { .. } => values.extend(cells.iter().map(Cell::text)),
            RowShape::One { .. } if schema.len() == 1 => values.push(cells[0].text()),
            _ => {}
        }
        // An injected invalid row is one that was valid.
        let kept = values.len() == schema.len()
            && rows
                .members
                .push_with(|out| canonical_member(&sorted_keys, &values, out) && !invalid_row());
        if !kept {
            rows.invalid += 1;
            if rows.samples.len() < 100 {
                rows.samples.insert(
                    format!("{}", rows.samples.len()),
                    Value::String("invalid or badly hashed row".into()),
                );
            }
        }
    }
    rows
}

/// Meta's refusal of a session's batch (error 2650, with the subcode saying why).
fn session_error(subcode: u64, message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, 2650, Some(subcode), message, false)
}

/// A request of an upload session: the audience, the session and batch numbers, and the
/// request's row count.
struct SessionBatch<'a> {
    id: &'a str,
    sid: u64,
    seq: u64,
    session: &'a Value,
    kind: Upload,
    rows: u64,
}

/// Applies a session's batch: a finished session refuses more; a replace session starts at
/// batch 1, lasts at most 90 minutes, and swaps its members in at its last batch. The rows the
/// session has received so far, or Meta's refusal.
fn apply_in_session(
    app: &AppState,
    batch: SessionBatch,
    members: MemberBatch,
) -> Result<u64, Response> {
    let SessionBatch {
        id,
        sid,
        seq,
        session,
        kind,
        rows,
    } = batch;
    let last = session["last_batch_flag"].as_bool().unwrap_or(false);
    let mut sessions = app.meta.sessions.lock().unwrap();
    let key = (id.to_string(), sid);
    let new = !sessions.contains_key(&key);
    let s = sessions.entry(key.clone()).or_default();
    if new {
        app.store.with(|st| st.sessions += 1);
        // Room for the members the session says are coming, at once rather than by doubling
        // (each doubling rehashes every member so far).
        if let Some(n) = session["estimated_num_total"]
            .as_u64()
            .filter(|_| kind != Upload::Remove)
        {
            app.store.reserve(id, n.min(100_000_000) as usize);
        }
        s.replace = kind == Upload::Replace;
        s.started = Some(Instant::now());
    }
    if s.finished {
        app.store.with(|st| st.rejected += 1);
        return Err(session_error(
            1870159,
            "The session has already finished: last_batch_flag was sent",
        ));
    }
    if kind == Upload::Replace {
        if new && seq != 1 {
            sessions.remove(&key);
            app.store.with(|st| st.rejected += 1);
            return Err(session_error(
                1870147,
                "The first batch of a replace session must have batch_seq 1",
            ));
        }
        if s.started
            .is_some_and(|t| t.elapsed() > Duration::from_secs(90 * 60))
        {
            return Err(session_error(1870158, "The replace session timed out"));
        }
        s.replacement.append(&members);
    }
    s.received += rows;
    let received = s.received;
    if last {
        s.finished = true;
    }
    let replacement = (kind == Upload::Replace && last).then(|| std::mem::take(&mut s.replacement));
    drop(sessions);
    let batch_id = Some((sid.to_string(), seq));
    match kind {
        // A replace's members wait in the session; its batches are recorded as they come.
        Upload::Replace => app
            .store
            .apply(id, batch_id, true, MemberBatch::default(), false),
        _ => app
            .store
            .apply(id, batch_id, kind == Upload::Add, members, false),
    }
    if let Some(r) = replacement {
        app.store.set_members(id, r);
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::state::unpack;

    /// A row's member as the store keeps it, unpacked; None if the row is rejected.
    fn member(schema: &[&'static str], values: &[&str]) -> Option<String> {
        let keys = member_keys(schema);
        let mut batch = MemberBatch::default();
        if !batch.push_with(|out| canonical_member(&keys, values, out)) {
            assert!(batch.is_empty(), "nothing kept of a rejected row");
            return None;
        }
        Some(unpack(batch.iter().next().unwrap()))
    }

    #[test]
    fn rows_become_members_with_sorted_keys_hashes_checked_and_raw_values_as_strings() {
        let hash = "0123456789abcdef".repeat(4);
        let madid = "6d92078a-8246-4ba4-ae5b-76104861e7dc";
        assert_eq!(
            member(&["LN", "EMAIL", "FN"], &[&hash, &hash, ""]).unwrap(),
            format!(r#"{{"EMAIL":"{hash}","LN":"{hash}"}}"#),
            "keys in order, empty values left out"
        );
        assert_eq!(
            member(&["MADID", "EXTERN_ID"], &[madid, "crm \"7\""]).unwrap(),
            format!(r#"{{"EXTERN_ID":"crm \"7\"","MADID":"{madid}"}}"#)
        );
        assert_eq!(
            member(&["EXTERN_ID"], &[&hash]).unwrap(),
            format!(r#"{{"EXTERN_ID":"{hash}"}}"#),
            "an external id that looks like a hash is kept as it was"
        );
        let rejected: [(&[&'static str], &[&str]); 6] = [
            (&["EMAIL"], &[&hash.to_uppercase()]),
            (&["EMAIL"], &[&hash[1..]]),
            (&["EMAIL", "FN"], &[&hash, "not a hash"]),
            (&["MADID"], &[&madid.to_uppercase()]),
            (&["MADID"], &[&madid[1..]]),
            (&["EMAIL", "MADID"], &["", ""]),
        ];
        for (schema, values) in rejected {
            assert_eq!(member(schema, values), None, "{schema:?} {values:?}");
        }
    }
}
