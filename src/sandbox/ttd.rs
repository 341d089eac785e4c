//! The Trade Desk emulator, both halves (shared/spec/platforms-more.md §B2, §B3):
//!
//! - the UID2 operator's `POST /v3/identity/map`: a request sealed with the client secret
//!   (`destinations::ttd::envelope`: version 1, IV, AES-256-GCM of timestamp, nonce and JSON),
//!   as bytes (`Content-Type: application/octet-stream`, the SDK's v3 client) or Base64 text,
//!   answered sealed in the same form. The JSON is any of `email`, `email_hash`, `phone`,
//!   `phone_hash` (lists of strings), at most `MAX_MAP_ITEMS` identifiers and 1 MB; each list
//!   is answered index-aligned with `{"u", "p", "r"}` or `{"e": "optout" | "invalid
//!   identifier"}`. A hash is the Base64 of 32 bytes; a raw e-mail is normalized as the uid2
//!   profile does; a raw phone must be E.164 (`+` and 10 to 15 digits), as UID2 requires.
//!   `optout@example.com` and `+00000000000` are opted out, as UID2's integration operator
//!   answers them (the uid2-client SDK's integration tests). An identifier maps to the same UID2
//!   on every call (an HMAC of its hash and the sandbox's rotation epoch); `POST
//!   /_sandbox/ttd/rotate` refreshes every UID2 at once, after which `p` names the one before.
//!   `r` is a week ahead, in seconds: the docs say milliseconds, but both official SDKs read
//!   seconds (UNCONFIRMED which the real operator sends). Errors are plain JSON `{"status",
//!   "message"}`: 401 `unauthorized` without a bearer API key or with one starting `revoked`
//!   (any other key is taken), 400 `client_error` with the operator's own messages for an
//!   envelope it cannot open (`Check encryption key (ClientSecret)`), a timestamp two minutes
//!   or more from its clock, a payload that is not JSON, too many identifiers. A map request
//!   arriving while another is answered is refused with 429 and counted: the operator is one
//!   request at a time.
//! - TTD's `POST /data/advertiser` with the `TTD-Auth` header (401 without one or with one
//!   starting `revoked`): `{"AdvertiserId", "Items": [{<one id key>, "Data": [{"Name",
//!   "TtlInMinutes"?}]}]}`, at most `MAX_REQUEST_BYTES`. Each Data entry adds the item's id to
//!   the advertiser's segment of that name (made on first use; listed in `/_sandbox/audiences`
//!   as platform `ttd`, its members `{"UID2": id}`), or removes it when `TtlInMinutes` is 0.
//!   Refused items do not stop the others: HTTP 200 with `{"FailedLines": [{"ItemNumber",
//!   "DataNumber"?, "ErrorCode", "Message"}]}` (numbers as strings, as the ttd-data SDK's model
//!   has them), else `{}`: no user id (`MissingUserId`), a UID2 or EUID that is not the Base64 of
//!   a raw id (`Uid2Error`; ttd-data sends `*` for one it could not map), a name longer than
//!   `MAX_DATA_NAME_CHARS` (`DataNameTooLong`), a TTL outside 0 to `MAX_TTL_MINUTES`
//!   (`InvalidTtlInMinutes`). A body that is not such an object is 400 with FailedLines; an
//!   AdvertiserId that is not letters and digits 400 `InvalidDataOwnerId`; a larger body 413.
//!   Limits and codes for malformed requests are UNCONFIRMED (TTD publishes none).
//!
//! Faults as every emulator: the `X-Sandbox-Fault` header, the rates of `FaultConfig` (errors
//! 500, throttling 429, TTD's with `Retry-After: 1`), dropped answers, and `invalid_row_rate` as
//! items refused with `Uid2Error`. Past `app.rate("ttd")` data requests or `app.rate("uid2")`
//! map requests in a rolling second: 429. `GET /_sandbox/ttd/stats` tells what the emulator saw.

// Checks answer with the platform's error `Response`; a handler returns it as it is.
#![allow(clippy::result_large_err)]

use super::AppState;
use super::faults::Fault;
use super::state::{CallWindow, MemberBatch, single_key_member};
use crate::destinations::ttd::envelope::{self, ClientSecret};
use crate::destinations::ttd::{MAX_MAP_ITEMS, OPTED_OUT_EMAIL, OPTED_OUT_PHONE};
use crate::identity::{Encoding, Kind, Profile, hash};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The operator's client secret unless the sandbox is given another: the Base64 of the 32
/// bytes `activator-sandbox-client-secret!`.
pub const DEFAULT_CLIENT_SECRET: &str = crate::destinations::ttd::SANDBOX_CLIENT_SECRET;
/// The largest identity-map request (platforms-more.md §B3: "≤1 MB").
pub const MAX_MAP_REQUEST_BYTES: usize = 1 << 20;
/// The largest data request taken (UNCONFIRMED: RudderStack cuts at 2.5 MB).
pub const MAX_REQUEST_BYTES: usize = 2_500_000;
/// The longest segment name (UNCONFIRMED: TTD's `DataNameTooLong` gives no figure).
pub const MAX_DATA_NAME_CHARS: usize = 256;
/// The longest TTL, 180 days (UNCONFIRMED: RudderStack's maximum).
pub const MAX_TTL_MINUTES: i64 = 180 * 1_440;
/// How far a request's timestamp may be from the operator's clock (the operator refuses more
/// than about a minute).
const MAX_CLOCK_DRIFT_MS: i64 = 60_000;
/// When a mapping's UID2 may be refreshed: a week ahead.
const REFRESH_AFTER_SECONDS: i64 = 7 * 86_400;
/// Keys beginning so are refused (how a test stands for a revoked key or token).
const REVOKED: &str = "revoked";
/// The key of the HMAC that makes the sandbox's UID2s.
const UID2_SALT: &[u8] = b"activator sandbox: UID2 salt";
/// The user id keys of a data item (ttd-data's BaseAdvertiserDataItem).
const ID_KEYS: &[&str] = &[
    "TDID",
    "DAID",
    "UID2",
    "UID2Token",
    "EUID",
    "EUIDToken",
    "RampID",
    "CoreID",
    "ID5",
    "NetID",
    "FirstID",
    "UtiqID",
    "MerkuryID",
    "RealID",
    "IqviaPPID",
    "CookieMappingPartnerId",
];

/// The operator's client secret from its Base64 text (for `activator sandbox
/// --uid2-client-secret`).
pub fn parse_client_secret(text: &str) -> Result<ClientSecret, String> {
    ClientSecret::from_base64(text)
}

/// What an identifier is, for its UID2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dii {
    Email,
    Phone,
}

/// The sandbox's raw UID2 of an identifier's SHA-256 at a rotation epoch: Base64 of 32 bytes.
pub fn raw_uid2(kind: Dii, digest: &[u8; 32], epoch: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, UID2_SALT);
    let mut message = Vec::with_capacity(8 + 1 + 32);
    message.extend_from_slice(&epoch.to_be_bytes());
    message.push(match kind {
        Dii::Email => b'e',
        Dii::Phone => b'p',
    });
    message.extend_from_slice(digest);
    STANDARD.encode(ring::hmac::sign(&key, &message).as_ref())
}

/// The raw UID2 of a Base64 SHA-256 (`email_sha256`, `phone_sha256` as the uid2 profile
/// writes them), for tests comparing segments with exports.
pub fn raw_uid2_of_hash(kind: Dii, hash: &str, epoch: u64) -> Option<String> {
    digest_of_hash(hash).map(|d| raw_uid2(kind, &d, epoch))
}

/// The 32 bytes of a Base64 SHA-256.
fn digest_of_hash(hash: &str) -> Option<[u8; 32]> {
    STANDARD.decode(hash).ok()?.try_into().ok()
}

/// The SHA-256 of a normalized value.
fn digest_of(normalized: &str) -> [u8; 32] {
    digest_of_hash(&hash::hash_to_string(normalized, Encoding::Base64)).expect("32 bytes")
}

/// What the emulator saw (`GET /_sandbox/ttd/stats`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TtdStats {
    pub map_requests: u64,
    pub identifiers_mapped: u64,
    pub opted_out: u64,
    pub invalid_identifiers: u64,
    /// The most identifiers one map request carried.
    pub max_map_items: u64,
    /// The most map requests in progress at once (the operator wants 1).
    pub max_parallel_map_requests: u64,
    /// Map requests refused because another was in progress.
    pub parallel_map_requests: u64,
    pub data_requests: u64,
    pub items_applied: u64,
    pub failed_lines: u64,
    pub epoch: u64,
}

/// The emulator's own state beside the shared store, which holds the segments' members.
pub struct TtdState {
    secret: ClientSecret,
    opted_out: [[u8; 32]; 2],
    epoch: AtomicU64,
    maps_in_progress: AtomicU64,
    operator_calls: CallWindow,
    data_calls: CallWindow,
    stats: Mutex<TtdStats>,
    /// Segment ids in the store by (advertiser, name).
    segments: Mutex<HashMap<(String, String), String>>,
}

impl TtdState {
    fn new(secret: ClientSecret) -> TtdState {
        TtdState {
            secret,
            opted_out: [digest_of(OPTED_OUT_EMAIL), digest_of(OPTED_OUT_PHONE)],
            epoch: AtomicU64::new(0),
            maps_in_progress: AtomicU64::new(0),
            operator_calls: CallWindow::default(),
            data_calls: CallWindow::default(),
            stats: Mutex::new(TtdStats::default()),
            segments: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, f: impl FnOnce(&mut TtdStats)) {
        f(&mut self.stats.lock().unwrap());
    }
}

/// A map request in progress; whether another was.
struct InProgress<'a> {
    state: &'a TtdState,
    parallel: bool,
}

impl TtdState {
    fn enter_map(&self) -> InProgress<'_> {
        let now = self.maps_in_progress.fetch_add(1, Ordering::SeqCst) + 1;
        self.count(|s| s.max_parallel_map_requests = s.max_parallel_map_requests.max(now));
        InProgress {
            state: self,
            parallel: now > 1,
        }
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.state.maps_in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

type Shared = State<(AppState, Arc<TtdState>)>;

/// The emulator's routes, its state applied, with the default client secret.
pub fn routes(app: AppState) -> Router {
    let secret =
        parse_client_secret(DEFAULT_CLIENT_SECRET).expect("the default secret is 32 bytes");
    routes_with_client_secret(app, secret)
}

/// The emulator's routes with the operator's client secret `secret`.
pub fn routes_with_client_secret(app: AppState, secret: ClientSecret) -> Router {
    Router::new()
        .route("/v3/identity/map", post(identity_map))
        .route("/data/advertiser", post(advertiser_data))
        .route("/_sandbox/ttd/stats", get(stats))
        .route("/_sandbox/ttd/rotate", post(rotate))
        .with_state((app, Arc::new(TtdState::new(secret))))
}

async fn stats(State((_, ttd)): Shared) -> Response {
    let mut stats = ttd.stats.lock().unwrap().clone();
    stats.epoch = ttd.epoch.load(Ordering::SeqCst);
    axum::Json(stats).into_response()
}

/// Refreshes every UID2: the next mappings give new ones, the old as `p`.
async fn rotate(State((_, ttd)): Shared) -> Response {
    let epoch = ttd.epoch.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(json!({ "epoch": epoch })).into_response()
}

/// A dropped answer: the request was applied, the client never learns it.
fn finish(app: &AppState, fault: Fault, response: Response) -> Response {
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

// The operator ------------------------------------------------------------------------------

fn operator_error(status: StatusCode, state: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "status": state, "message": message })),
    )
        .into_response()
}

fn client_error(app: &AppState, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    operator_error(StatusCode::BAD_REQUEST, "client_error", message)
}

/// Counts the request, injects the fault it draws, throttles, and checks the API key.
async fn operator_gate(
    app: &AppState,
    ttd: &TtdState,
    headers: &HeaderMap,
) -> Result<Fault, Response> {
    app.store.with(|s| s.requests += 1);
    let fault = app
        .faults
        .decide(headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()))
        .await;
    let too_many = || {
        operator_error(
            StatusCode::TOO_MANY_REQUESTS,
            "client_error",
            "Too many requests",
        )
    };
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(operator_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unknown",
                "Internal error",
            ));
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return Err(too_many());
        }
        _ => {}
    }
    if !ttd
        .operator_calls
        .admit(app.rate("uid2"), Duration::from_secs(1))
    {
        app.store.with(|s| s.rate_limited += 1);
        return Err(too_many());
    }
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|k| !k.trim().is_empty() && !k.starts_with(REVOKED));
    match key {
        Some(_) => Ok(fault),
        None => Err(operator_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The request did not include a valid API key (bearer token).",
        )),
    }
}

/// `POST /v3/identity/map`.
async fn identity_map(State((app, ttd)): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let in_progress = ttd.enter_map();
    let fault = match operator_gate(&app, &ttd, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if in_progress.parallel {
        ttd.count(|s| s.parallel_map_requests += 1);
        app.store.with(|s| s.rate_limited += 1);
        return operator_error(
            StatusCode::TOO_MANY_REQUESTS,
            "client_error",
            "Too many requests: send identity-map batches one at a time",
        );
    }
    let answer = match map_answer(&app, &ttd, &headers, &body) {
        Ok(r) | Err(r) => r,
    };
    finish(&app, fault, answer)
}

/// The identifiers of a map request.
#[derive(Default, Deserialize)]
struct MapRequest {
    #[serde(default)]
    email: Option<Vec<String>>,
    #[serde(default)]
    email_hash: Option<Vec<String>>,
    #[serde(default)]
    phone: Option<Vec<String>>,
    #[serde(default)]
    phone_hash: Option<Vec<String>>,
}

impl MapRequest {
    fn len(&self) -> usize {
        [&self.email, &self.email_hash, &self.phone, &self.phone_hash]
            .into_iter()
            .map(|list| match list {
                Some(values) => values.len(),
                None => 0,
            })
            .sum()
    }
}

/// Opens the request, maps it, seals the answer in the request's form.
fn map_answer(
    app: &AppState,
    ttd: &TtdState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Response> {
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
    if body.len() > MAX_MAP_REQUEST_BYTES {
        return Err(client_error(app, "Request body too large: at most 1 MB"));
    }
    let binary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("application/octet-stream"));
    let sealed = match binary {
        true => body.to_vec(),
        false => STANDARD
            .decode(body.trim_ascii())
            .map_err(|_| client_error(app, "Invalid body: Body is not valid base64."))?,
    };
    let opened = envelope::open_request(&ttd.secret, &sealed).map_err(|m| client_error(app, m))?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    if (now_ms - opened.timestamp_ms).abs() >= MAX_CLOCK_DRIFT_MS {
        return Err(client_error(
            app,
            "Invalid timestamp: Request too old or client time drift.",
        ));
    }
    let request: MapRequest = serde_json::from_slice(&opened.json).map_err(|_| {
        client_error(
            app,
            "Invalid payload in body: Data is not valid json string.",
        )
    })?;
    if request.len() > MAX_MAP_ITEMS {
        return Err(client_error(
            app,
            "Too many identifiers: at most 5,000 per request",
        ));
    }
    ttd.count(|s| {
        s.map_requests += 1;
        s.max_map_items = s.max_map_items.max(request.len() as u64);
    });
    let json = serde_json::to_vec(&map_body(ttd, &request)).expect("JSON");
    let iv = envelope::random_iv()
        .map_err(|m| operator_error(StatusCode::INTERNAL_SERVER_ERROR, "unknown", &m))?;
    let answer = envelope::seal_answer(&ttd.secret, &opened.nonce, &json, now_ms, iv);
    Ok(match binary {
        true => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            answer,
        )
            .into_response(),
        false => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            STANDARD.encode(answer),
        )
            .into_response(),
    })
}

/// `{"body": {"email": [...], "email_hash": [...], "phone": [...], "phone_hash": [...]},
/// "status": "success"}`, each list index-aligned with the request's.
fn map_body(ttd: &TtdState, request: &MapRequest) -> Value {
    let epoch = ttd.epoch.load(Ordering::SeqCst);
    let refresh = chrono::Utc::now().timestamp() + REFRESH_AFTER_SECONDS;
    let list = |values: &Option<Vec<String>>,
                kind: Dii,
                read: fn(&str) -> Option<[u8; 32]>|
     -> Vec<Value> {
        values
            .iter()
            .flatten()
            .map(|v| entry(ttd, kind, read(v), epoch, refresh))
            .collect()
    };
    json!({
        "body": {
            "email": list(&request.email, Dii::Email, normalized_email),
            "email_hash": list(&request.email_hash, Dii::Email, digest_of_hash),
            "phone": list(&request.phone, Dii::Phone, normalized_phone),
            "phone_hash": list(&request.phone_hash, Dii::Phone, digest_of_hash),
        },
        "status": "success",
    })
}

/// One identifier's answer.
fn entry(ttd: &TtdState, kind: Dii, digest: Option<[u8; 32]>, epoch: u64, refresh: i64) -> Value {
    let Some(digest) = digest else {
        ttd.count(|s| s.invalid_identifiers += 1);
        return json!({ "e": "invalid identifier" });
    };
    if ttd.opted_out.contains(&digest) {
        ttd.count(|s| s.opted_out += 1);
        return json!({ "e": "optout" });
    }
    ttd.count(|s| s.identifiers_mapped += 1);
    let previous = epoch.checked_sub(1).map(|e| raw_uid2(kind, &digest, e));
    json!({ "u": raw_uid2(kind, &digest, epoch), "p": previous, "r": refresh })
}

/// A raw e-mail's SHA-256 once normalized by UID2's rules (the uid2 profile's).
fn normalized_email(raw: &str) -> Option<[u8; 32]> {
    let (_, sent) = crate::identity::normalize_one(Profile::Uid2, Kind::Email, raw, None)
        .result
        .ok()?;
    digest_of_hash(&sent.first()?.1)
}

/// A raw phone's SHA-256 if it is E.164: `+` and 10 to 15 digits, nothing else.
fn normalized_phone(raw: &str) -> Option<[u8; 32]> {
    let digits = raw.strip_prefix('+')?;
    let e164 = (10..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    e164.then(|| digest_of(raw))
}

// The data API ------------------------------------------------------------------------------

/// A request-level refusal: `{"FailedLines": [{"ErrorCode", "Message"}]}`.
fn refused(app: &AppState, status: StatusCode, code: &str, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    let body = json!({ "FailedLines": [{ "ErrorCode": code, "Message": message }] });
    (status, axum::Json(body)).into_response()
}

fn data_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "Message": message }))).into_response()
}

fn throttled() -> Response {
    let mut response = data_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Counts the request, injects the fault it draws, throttles, and checks the TTD-Auth token.
async fn data_gate(app: &AppState, ttd: &TtdState, headers: &HeaderMap) -> Result<Fault, Response> {
    app.store.with(|s| s.requests += 1);
    let fault = app
        .faults
        .decide(headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()))
        .await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(data_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ));
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return Err(throttled());
        }
        _ => {}
    }
    if !ttd
        .data_calls
        .admit(app.rate("ttd"), Duration::from_secs(1))
    {
        app.store.with(|s| s.rate_limited += 1);
        return Err(throttled());
    }
    let token = headers
        .get("ttd-auth")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.trim().is_empty() && !t.starts_with(REVOKED));
    match token {
        Some(_) => Ok(fault),
        None => Err(data_error(
            StatusCode::UNAUTHORIZED,
            "Authentication failed: the TTD-Auth token is missing, expired or revoked.",
        )),
    }
}

/// `POST /data/advertiser`.
async fn advertiser_data(State((app, ttd)): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let fault = match data_gate(&app, &ttd, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
    let answer = match ingest(&app, &ttd, &body) {
        Ok(r) | Err(r) => r,
    };
    finish(&app, fault, answer)
}

/// A change an item asks for: its id added to (or removed from) a segment.
struct Change {
    segment: String,
    member: String,
    add: bool,
}

/// A refused item's line.
#[derive(Debug)]
struct FailedLine {
    data_number: Option<usize>,
    code: &'static str,
    message: &'static str,
}

impl FailedLine {
    fn new(code: &'static str, message: &'static str) -> FailedLine {
        FailedLine {
            data_number: None,
            code,
            message,
        }
    }

    fn json(&self, item_number: usize) -> Value {
        let mut line = json!({
            "ItemNumber": item_number.to_string(),
            "ErrorCode": self.code,
            "Message": self.message,
        });
        if let Some(n) = self.data_number {
            line["DataNumber"] = json!(n.to_string());
        }
        line
    }
}

/// Checks the request, applies the items it can, and answers the lines it could not.
fn ingest(app: &AppState, ttd: &TtdState, body: &Bytes) -> Result<Response, Response> {
    if body.len() > MAX_REQUEST_BYTES {
        app.store.with(|s| s.rejected += 1);
        return Err(data_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MaxRequestSizeExceeded: the request is larger than the data API takes",
        ));
    }
    let request: Value = serde_json::from_slice(body).map_err(|_| {
        refused(
            app,
            StatusCode::BAD_REQUEST,
            "ItemDeserializationError",
            "The body is not JSON.",
        )
    })?;
    let advertiser = request["AdvertiserId"].as_str().unwrap_or_default();
    if advertiser.is_empty()
        || advertiser.len() > 32
        || !advertiser.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(refused(
            app,
            StatusCode::BAD_REQUEST,
            "InvalidDataOwnerId",
            "AdvertiserId: an advertiser's id is required.",
        ));
    }
    let items = match request["Items"].as_array() {
        Some(items) if !items.is_empty() => items,
        _ => {
            return Err(refused(
                app,
                StatusCode::BAD_REQUEST,
                "ItemDeserializationError",
                "Items: at least one item is required.",
            ));
        }
    };
    app.store
        .with(|s| s.max_rows_per_request = s.max_rows_per_request.max(items.len() as u64));
    let mut drawn_invalid = app.faults.invalid_rows();
    let (mut changes, mut failed) = (vec![], vec![]);
    for (i, item) in items.iter().enumerate() {
        match read_item(item, &mut drawn_invalid) {
            Ok(mut c) => changes.append(&mut c),
            Err(line) => failed.push(line.json(i + 1)),
        }
    }
    let applied = changes.len() as u64;
    apply(app, ttd, advertiser, changes);
    ttd.count(|s| {
        s.data_requests += 1;
        s.items_applied += applied;
        s.failed_lines += failed.len() as u64;
    });
    Ok(match failed.is_empty() {
        true => axum::Json(json!({})).into_response(),
        false => axum::Json(json!({ "FailedLines": failed })).into_response(),
    })
}

/// An item's changes, or the line that refuses it.
fn read_item(
    item: &Value,
    drawn_invalid: &mut impl FnMut() -> bool,
) -> Result<Vec<Change>, FailedLine> {
    let Some(fields) = item.as_object() else {
        return Err(FailedLine::new(
            "ItemDeserializationError",
            "An item is a JSON object.",
        ));
    };
    let ids: Vec<&str> = ID_KEYS
        .iter()
        .copied()
        .filter(|k| fields.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    let key = match ids.as_slice() {
        [] => return Err(FailedLine::new("MissingUserId", "The item has no user id.")),
        [key] => *key,
        _ => {
            return Err(FailedLine::new(
                "InvalidParameterFormat",
                "An item carries one user id.",
            ));
        }
    };
    let Some(id) = fields[key].as_str().filter(|v| !v.is_empty()) else {
        return Err(FailedLine::new(
            "InvalidParameterFormat",
            "The user id is a string.",
        ));
    };
    if matches!(key, "UID2" | "EUID") && !is_raw_id(id) {
        return Err(FailedLine::new("Uid2Error", "Invalid UID2."));
    }
    if drawn_invalid() {
        return Err(FailedLine::new("Uid2Error", "Invalid UID2."));
    }
    let member = single_key_member(key, id);
    let Some(data) = fields
        .get("Data")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
    else {
        return Err(FailedLine::new(
            "ItemDeserializationError",
            "Data: at least one entry is required.",
        ));
    };
    let mut changes = Vec::with_capacity(data.len());
    for (j, entry) in data.iter().enumerate() {
        let (segment, add) = read_data(entry).map_err(|mut line| {
            line.data_number = Some(j + 1);
            line
        })?;
        changes.push(Change {
            segment,
            member: member.clone(),
            add,
        });
    }
    Ok(changes)
}

/// A Data entry's segment and whether it adds (a TTL above 0, or none) or removes (TTL 0).
fn read_data(entry: &Value) -> Result<(String, bool), FailedLine> {
    let name = entry["Name"].as_str().unwrap_or_default();
    if name.trim().is_empty() {
        return Err(FailedLine::new(
            "ItemDeserializationError",
            "Data.Name is required.",
        ));
    }
    if name.chars().count() > MAX_DATA_NAME_CHARS {
        return Err(FailedLine::new("DataNameTooLong", "Data.Name is too long."));
    }
    match &entry["TtlInMinutes"] {
        Value::Null => Ok((name.to_string(), true)),
        ttl => match ttl.as_i64() {
            Some(m) if (0..=MAX_TTL_MINUTES).contains(&m) => Ok((name.to_string(), m > 0)),
            _ => Err(FailedLine::new(
                "InvalidTtlInMinutes",
                "TtlInMinutes is out of range.",
            )),
        },
    }
}

/// A raw UID2 or EUID: the Base64 of 32 bytes (33 for newer ones).
fn is_raw_id(id: &str) -> bool {
    STANDARD
        .decode(id)
        .is_ok_and(|b| matches!(b.len(), 32 | 33))
}

/// Applies changes in order, segment by segment, each run of adds or removes at once.
fn apply(app: &AppState, ttd: &TtdState, advertiser: &str, changes: Vec<Change>) {
    let mut by_segment: Vec<(String, Vec<(String, bool)>)> = vec![];
    for c in changes {
        match by_segment.iter().position(|(s, _)| *s == c.segment) {
            Some(i) => by_segment[i].1.push((c.member, c.add)),
            None => by_segment.push((c.segment, vec![(c.member, c.add)])),
        }
    }
    for (name, list) in by_segment {
        let creates = list.iter().any(|(_, add)| *add);
        let Some(id) = segment_id(app, ttd, advertiser, &name, creates) else {
            continue;
        };
        for run in list.chunk_by(|a, b| a.1 == b.1) {
            let members: MemberBatch = run.iter().map(|(m, _)| m.clone()).collect();
            app.store.apply(&id, None, run[0].1, members, false);
        }
    }
}

/// The store's id of the advertiser's segment `name`; made if `create` and missing.
fn segment_id(
    app: &AppState,
    ttd: &TtdState,
    advertiser: &str,
    name: &str,
    create: bool,
) -> Option<String> {
    let mut segments = ttd.segments.lock().unwrap();
    let key = (advertiser.to_string(), name.to_string());
    if let Some(id) = segments.get(&key)
        && app.store.get(id).is_some()
    {
        return Some(id.clone());
    }
    if !create {
        return None;
    }
    let id = app.store.create("ttd", advertiser, name).id;
    segments.insert(key, id.clone());
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identifier_maps_to_one_uid2_per_epoch_and_kind() {
        let digest = digest_of("user@example.com");
        let first = raw_uid2(Dii::Email, &digest, 0);
        assert_eq!(first, raw_uid2(Dii::Email, &digest, 0));
        assert_eq!(STANDARD.decode(&first).unwrap().len(), 32);
        assert_ne!(first, raw_uid2(Dii::Email, &digest, 1));
        assert_ne!(first, raw_uid2(Dii::Phone, &digest, 0));
        let hash = hash::hash_to_string("user@example.com", Encoding::Base64);
        assert_eq!(raw_uid2_of_hash(Dii::Email, &hash, 0), Some(first));
        assert_eq!(raw_uid2_of_hash(Dii::Email, "not a hash", 0), None);
        // Python: base64(hmac.new(UID2_SALT, epoch.to_bytes(8, "big") + b"e" + sha256(e), sha256)).
        assert_eq!(
            raw_uid2(Dii::Email, &digest_of("user@example.com"), 0),
            "y1f+u/RF+uqDddUGf4IXdo5ukRNbvsTZ9V0zLezXJpM="
        );
    }

    #[test]
    fn raw_identifiers_are_read_as_uid2_reads_them() {
        assert_eq!(
            normalized_email(" User.Name+x@GMail.com"),
            Some(digest_of("username@gmail.com"))
        );
        assert_eq!(normalized_email("not an e-mail"), None);
        assert_eq!(
            normalized_phone("+12345678901"),
            Some(digest_of("+12345678901"))
        );
        for bad in [
            "12345678901",
            "+123456789",
            "+1234567890123456",
            "+1234567890 ",
            "+1 234 567 8901",
        ] {
            assert_eq!(normalized_phone(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn items_are_refused_by_line_and_data_entries_add_or_remove() {
        let mut never = || false;
        let uid2 = raw_uid2(Dii::Email, &digest_of("a@example.com"), 0);
        let add =
            json!({"UID2": uid2, "Data": [{"Name": "s", "TtlInMinutes": 43200}, {"Name": "t"}]});
        let changes = read_item(&add, &mut never).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(
            changes
                .iter()
                .all(|c| c.add && c.member == single_key_member("UID2", &uid2))
        );
        let remove = json!({"UID2": uid2, "Data": [{"Name": "s", "TtlInMinutes": 0}]});
        assert!(!read_item(&remove, &mut never).unwrap()[0].add);
        let code = |item: Value| read_item(&item, &mut || false).err().map(|l| l.code);
        assert_eq!(
            code(json!({"Data": [{"Name": "s"}]})),
            Some("MissingUserId")
        );
        assert_eq!(
            code(json!({"UID2": "*", "Data": [{"Name": "s"}]})),
            Some("Uid2Error")
        );
        assert_eq!(
            code(json!({"UID2": uid2, "TDID": "x", "Data": [{"Name": "s"}]})),
            Some("InvalidParameterFormat")
        );
        assert_eq!(
            code(json!({"UID2": uid2, "Data": [{"Name": "x".repeat(257)}]})),
            Some("DataNameTooLong")
        );
        assert_eq!(
            code(json!({"UID2": uid2, "Data": [{"Name": "s", "TtlInMinutes": -1}]})),
            Some("InvalidTtlInMinutes")
        );
        assert_eq!(
            code(json!({"UID2": uid2, "Data": []})),
            Some("ItemDeserializationError")
        );
        let line = read_item(
            &json!({"UID2": uid2, "Data": [{"Name": "s"}, {"Name": ""}]}),
            &mut never,
        )
        .err()
        .unwrap()
        .json(4);
        assert_eq!(line["ItemNumber"], "4");
        assert_eq!(line["DataNumber"], "2");
    }
}
