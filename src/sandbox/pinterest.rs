//! Pinterest API v5 emulator: customer lists, and the audiences that make them targetable
//! (shared/spec/platforms-more.md §C; the shapes from Pinterest's OpenAPI v5.23.0):
//!
//! - `POST  /v5/ad_accounts/{account}/customer_lists` `{name, records, list_type}`: a list made
//!   with its first records (the API requires them);
//! - `GET   /v5/ad_accounts/{account}/customer_lists?page_size&order&bookmark`: `{items,
//!   bookmark}`, at most 250 a page, the bookmark an offset clients pass back as it came;
//! - `GET   /v5/ad_accounts/{account}/customer_lists/{id}`;
//! - `PATCH /v5/ad_accounts/{account}/customer_lists/{id}` `{operation_type: ADD|REMOVE,
//!   records}`;
//! - `GET|POST /v5/ad_accounts/{account}/audiences`, `GET .../audiences/{id}`: `CUSTOMER_LIST`
//!   audiences whose `rule.customer_list_id` is a list of the account (the only type emulated).
//!
//! Checked: ids are digits (at most 18); a bearer token; `list_type` EMAIL, MAID or IDFA (the
//! kinds activator sends); `records` one comma-separated string (empty items, as a trailing
//! comma leaves, are skipped), each a SHA-256, SHA-1 or MD5 in lowercase hex (Pinterest: "MAIDs
//! and IDFAs must be hashed"), or for an EMAIL list a lowercase plain e-mail; at least one, at
//! most `MAX_RECORDS` a request (UNCONFIRMED figure). A refused record fails the whole request
//! with HTTP 400, naming its place, never its value; `invalid_row_rate` refuses records so.
//!
//! Answers are `CustomerList` objects whose `status` is PROCESSING for a moment after each
//! change, then TOO_SMALL under 100 records (every record counts as a matched account here) or
//! READY; `num_uploaded_user_records` and `num_removed_user_records` count every record sent,
//! present or not, as Pinterest's do. Errors are `{code, message}`: 400 (code 400), 401 code 2
//! "Authentication failed." without a bearer token or with one beginning `revoked` (how a test
//! stands for a token Pinterest no longer takes), 404, 429 code 8 past `app.rate("pinterest")`
//! requests in a rolling second, 500 injected (codes of 400, 404 and 500 UNCONFIRMED; 2 and 8
//! are the OpenAPI's examples). Each record is a member of its own (`{"EMAIL": hash}`,
//! `{"MAID": hash}`): Pinterest matches each on its own.

use super::AppState;
use super::faults::Fault;
use super::state::{Audience, CallWindow, MemberBatch, single_key_member};
use crate::destinations::pinterest::{MAX_ID_DIGITS, MAX_RECORDS, PAGE_SIZE, TARGETABLE_MATCHES};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The list types emulated: those activator sends.
const LIST_TYPES: &[&str] = &["EMAIL", "MAID", "IDFA"];
/// How long a list is PROCESSING after a change.
const MATCHING_TIME: Duration = Duration::from_millis(200);
/// Tokens beginning so are refused as revoked.
const REVOKED: &str = "revoked";
/// Pinterest's default page size (OpenAPI `query_page_size`).
const DEFAULT_PAGE_SIZE: usize = 25;

/// The emulator's own state beside the shared store, which holds the lists' members.
#[derive(Default)]
pub struct PinterestState {
    calls: CallWindow,
    /// What a list is beyond its members, by its id in the store.
    lists: Mutex<HashMap<String, ListMeta>>,
    /// Audiences in the order they were made.
    audiences: Mutex<Vec<TargetingAudience>>,
    next_audience: AtomicU64,
}

#[derive(Clone)]
struct ListMeta {
    list_type: String,
    created: i64,
    updated: i64,
    batches: u64,
    uploaded: u64,
    removed: u64,
    changed_at: Instant,
}

impl ListMeta {
    fn status(&self, size: usize) -> &'static str {
        if self.changed_at.elapsed() < MATCHING_TIME {
            "PROCESSING"
        } else if (size as u64) < TARGETABLE_MATCHES {
            "TOO_SMALL"
        } else {
            "READY"
        }
    }
}

#[derive(Clone)]
struct TargetingAudience {
    id: String,
    account: String,
    name: String,
    description: String,
    list: String,
    created: i64,
}

impl PinterestState {
    /// A list was made with its first records (a store id used before a reset is new again).
    fn created(&self, id: &str, list_type: &str, records: u64) {
        let now = chrono::Utc::now().timestamp();
        let meta = ListMeta {
            list_type: list_type.to_string(),
            created: now,
            updated: now,
            batches: 1,
            uploaded: records,
            removed: 0,
            changed_at: Instant::now(),
        };
        self.lists.lock().unwrap().insert(id.to_string(), meta);
        self.audiences.lock().unwrap().retain(|a| a.list != id);
    }

    fn changed(&self, id: &str, add: bool, records: u64) {
        if let Some(m) = self.lists.lock().unwrap().get_mut(id) {
            m.batches += 1;
            match add {
                true => m.uploaded += records,
                false => m.removed += records,
            }
            m.updated = chrono::Utc::now().timestamp();
            m.changed_at = Instant::now();
        }
    }

    fn meta(&self, id: &str) -> Option<ListMeta> {
        self.lists.lock().unwrap().get(id).cloned()
    }
}

type Shared = State<(AppState, Arc<PinterestState>)>;

/// The emulator's routes, its state applied.
pub fn routes(app: AppState) -> Router {
    Router::new()
        .route(
            "/v5/ad_accounts/{account}/customer_lists",
            get(list_lists).post(create_list),
        )
        .route(
            "/v5/ad_accounts/{account}/customer_lists/{id}",
            get(get_list).patch(update_list),
        )
        .route(
            "/v5/ad_accounts/{account}/audiences",
            get(list_audiences).post(create_audience),
        )
        .route(
            "/v5/ad_accounts/{account}/audiences/{id}",
            get(get_audience),
        )
        .with_state((app, Arc::new(PinterestState::default())))
}

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn invalid(app: &AppState, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    error(StatusCode::BAD_REQUEST, 400, message)
}

fn not_found(app: &AppState, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    error(StatusCode::NOT_FOUND, 404, message)
}

fn throttled() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        8,
        "This request exceeded a rate limit. This can happen if the client exceeds one of the published rate limits within a short time window.",
    )
}

/// Counts the request, injects the fault it draws, throttles, and checks the bearer token.
async fn gate(
    app: &AppState,
    pin: &PinterestState,
    headers: &HeaderMap,
) -> Result<Fault, Response> {
    app.store.with(|s| s.requests += 1);
    let fault = app
        .faults
        .decide(headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()))
        .await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                500,
                "Internal server error.",
            ));
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return Err(throttled());
        }
        _ => {}
    }
    if !pin
        .calls
        .admit(app.rate("pinterest"), Duration::from_secs(1))
    {
        app.store.with(|s| s.rate_limited += 1);
        return Err(throttled());
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty() && !t.starts_with(REVOKED));
    match token {
        Some(_) => Ok(fault),
        None => Err(error(StatusCode::UNAUTHORIZED, 2, "Authentication failed.")),
    }
}

/// A dropped answer: the request was applied, the client never learns it.
fn finish(app: &AppState, fault: Fault, response: Response) -> Response {
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

/// Ids in paths are digits, at most 18.
fn digits(field: &str, id: &str) -> Result<(), String> {
    match !id.is_empty() && id.len() <= MAX_ID_DIGITS && id.bytes().all(|b| b.is_ascii_digit()) {
        true => Ok(()),
        false => Err(format!("{field}: digits, at most {MAX_ID_DIGITS}")),
    }
}

/// The account's customer list `id`, if there is one.
fn customer_list(app: &AppState, account: &str, id: &str) -> Option<Audience> {
    app.store
        .get(id)
        .filter(|a| a.platform == "pinterest" && a.account == account)
}

fn list_json(pin: &PinterestState, a: &Audience) -> Value {
    let meta = pin.meta(&a.id).unwrap_or_else(|| ListMeta {
        list_type: "EMAIL".into(),
        created: 0,
        updated: 0,
        batches: 0,
        uploaded: 0,
        removed: 0,
        changed_at: Instant::now()
            .checked_sub(MATCHING_TIME)
            .unwrap_or_else(Instant::now),
    });
    json!({
        "id": a.id,
        "name": a.name,
        "ad_account_id": a.account,
        "created_time": meta.created,
        "updated_time": meta.updated,
        "num_batches": meta.batches,
        "num_uploaded_user_records": meta.uploaded,
        "num_removed_user_records": meta.removed,
        "status": meta.status(a.size),
        "type": "customerlist",
        "exceptions": {},
    })
}

/// One page of `items`: `{items, bookmark}`, the bookmark the offset of the next page.
fn page(q: &HashMap<String, String>, mut items: Vec<Value>) -> Result<Value, String> {
    let size = match q.get("page_size") {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PAGE_SIZE).contains(n))
            .ok_or(format!("page_size: 1 to {PAGE_SIZE}"))?,
    };
    let from = match q.get("bookmark") {
        None => 0,
        Some(b) => b
            .parse::<usize>()
            .map_err(|_| "bookmark: pass back one this API gave".to_string())?,
    };
    match q.get("order").map(String::as_str) {
        None | Some("ASCENDING") => {}
        Some("DESCENDING") => items.reverse(),
        Some(_) => return Err("order: ASCENDING or DESCENDING".into()),
    }
    let end = from.saturating_add(size);
    let next = (end < items.len()).then(|| end.to_string());
    let items: Vec<Value> = items.into_iter().skip(from).take(size).collect();
    Ok(json!({ "items": items, "bookmark": next }))
}

/// Whether a record is one Pinterest takes in a list of `list_type`.
fn acceptable(record: &str, list_type: &str) -> bool {
    let hex_hash = matches!(record.len(), 32 | 40 | 64)
        && record
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let plain_email = list_type == "EMAIL"
        && record.contains('@')
        && !record
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace());
    hex_hash || plain_email
}

/// A request's records, split and checked; or why they are refused (by place, not value).
fn checked_records<'a>(
    app: &AppState,
    text: &'a str,
    list_type: &str,
) -> Result<Vec<&'a str>, String> {
    let records: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    app.store
        .with(|s| s.max_rows_per_request = s.max_rows_per_request.max(records.len() as u64));
    if records.is_empty() {
        return Err("records: at least one record is required".into());
    }
    if records.len() > MAX_RECORDS {
        return Err(format!(
            "records: {} records; at most {MAX_RECORDS} per request",
            records.len()
        ));
    }
    let mut drawn_invalid = app.faults.invalid_rows();
    for (i, record) in records.iter().enumerate() {
        if !acceptable(record, list_type) || drawn_invalid() {
            return Err(format!(
                "records[{i}]: not a valid {list_type} record: {}",
                match list_type {
                    "EMAIL" => "a lowercase e-mail, or its SHA-256, SHA-1 or MD5 in lowercase hex",
                    _ =>
                        "MAIDs and IDFAs must be hashed with SHA-256, SHA-1 or MD5 (lowercase hex)",
                }
            ));
        }
    }
    Ok(records)
}

fn members(list_type: &str, records: &[&str]) -> MemberBatch {
    records
        .iter()
        .map(|r| single_key_member(list_type, r))
        .collect()
}

#[derive(Deserialize)]
struct CreateList {
    name: Option<String>,
    records: Option<String>,
    list_type: Option<String>,
}

#[derive(Deserialize)]
struct UpdateList {
    operation_type: Option<String>,
    records: Option<String>,
}

fn upload_seen(app: &AppState, body: &Bytes) {
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
}

/// `POST .../customer_lists`: a list with its first records.
async fn create_list(
    State((app, pin)): Shared,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &pin, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    upload_seen(&app, &body);
    if let Err(m) = digits("ad_account_id", &account) {
        return invalid(&app, &m);
    }
    let Ok(create) = serde_json::from_slice::<CreateList>(&body) else {
        return invalid(
            &app,
            "the body is not a JSON object of name, records and list_type",
        );
    };
    let name = create.name.unwrap_or_default();
    if name.trim().is_empty() {
        return invalid(&app, "name: required");
    }
    let list_type = create.list_type.unwrap_or_else(|| "EMAIL".into());
    if !LIST_TYPES.contains(&list_type.as_str()) {
        return invalid(
            &app,
            "list_type: the sandbox emulates EMAIL, MAID and IDFA lists",
        );
    }
    let text = create.records.unwrap_or_default();
    let records = match checked_records(&app, &text, &list_type) {
        Ok(r) => r,
        Err(m) => return invalid(&app, &m),
    };
    let list = app.store.create("pinterest", &account, &name);
    pin.created(&list.id, &list_type, records.len() as u64);
    app.store
        .apply(&list.id, None, true, members(&list_type, &records), false);
    let list = app.store.get(&list.id).unwrap_or(list);
    finish(
        &app,
        fault,
        axum::Json(list_json(&pin, &list)).into_response(),
    )
}

/// `PATCH .../customer_lists/{id}`: `ADD` or `REMOVE` of records.
async fn update_list(
    State((app, pin)): Shared,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &pin, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    upload_seen(&app, &body);
    if let Err(m) = digits("ad_account_id", &account).and(digits("customer_list_id", &id)) {
        return invalid(&app, &m);
    }
    if customer_list(&app, &account, &id).is_none() {
        return not_found(
            &app,
            &format!("Customer list {id} not found in ad account {account}."),
        );
    }
    let Ok(update) = serde_json::from_slice::<UpdateList>(&body) else {
        return invalid(
            &app,
            "the body is not a JSON object of operation_type and records",
        );
    };
    let add = match update.operation_type.as_deref() {
        Some("ADD") => true,
        Some("REMOVE") => false,
        _ => return invalid(&app, "operation_type: ADD or REMOVE"),
    };
    let list_type = pin
        .meta(&id)
        .map_or_else(|| "EMAIL".to_string(), |m| m.list_type);
    let text = update.records.unwrap_or_default();
    let records = match checked_records(&app, &text, &list_type) {
        Ok(r) => r,
        Err(m) => return invalid(&app, &m),
    };
    app.store
        .apply(&id, None, add, members(&list_type, &records), false);
    pin.changed(&id, add, records.len() as u64);
    let Some(list) = customer_list(&app, &account, &id) else {
        return not_found(
            &app,
            &format!("Customer list {id} not found in ad account {account}."),
        );
    };
    finish(
        &app,
        fault,
        axum::Json(list_json(&pin, &list)).into_response(),
    )
}

/// `GET .../customer_lists/{id}`.
async fn get_list(
    State((app, pin)): Shared,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &pin, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(m) = digits("ad_account_id", &account).and(digits("customer_list_id", &id)) {
        return invalid(&app, &m);
    }
    let Some(list) = customer_list(&app, &account, &id) else {
        return not_found(
            &app,
            &format!("Customer list {id} not found in ad account {account}."),
        );
    };
    finish(
        &app,
        fault,
        axum::Json(list_json(&pin, &list)).into_response(),
    )
}

/// `GET .../customer_lists`, paged.
async fn list_lists(
    State((app, pin)): Shared,
    Path(account): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &pin, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(m) = digits("ad_account_id", &account) {
        return invalid(&app, &m);
    }
    let lists: Vec<Value> = app
        .store
        .list()
        .iter()
        .filter(|a| a.platform == "pinterest" && a.account == account)
        .map(|a| list_json(&pin, a))
        .collect();
    match page(&q, lists) {
        Ok(page) => finish(&app, fault, axum::Json(page).into_response()),
        Err(m) => invalid(&app, &m),
    }
}

fn audience_json(app: &AppState, pin: &PinterestState, t: &TargetingAudience) -> Value {
    let list = customer_list(app, &t.account, &t.list);
    let status = match (&list, pin.meta(&t.list)) {
        (Some(l), Some(m)) => match m.status(l.size) {
            "PROCESSING" => "INITIALIZING",
            other => other,
        },
        _ => "TOO_SMALL",
    };
    json!({
        "id": t.id,
        "ad_account_id": t.account,
        "name": t.name,
        "audience_type": "CUSTOMER_LIST",
        "description": t.description,
        "rule": {"customer_list_id": t.list, "ad_account_id": t.account},
        "size": list.map(|l| l.size),
        "status": status,
        "type": "audience",
        "created_timestamp": t.created,
        "updated_timestamp": t.created,
    })
}

/// The account's audiences whose lists still exist.
fn audiences_of(app: &AppState, pin: &PinterestState, account: &str) -> Vec<TargetingAudience> {
    let all = pin.audiences.lock().unwrap().clone();
    all.into_iter()
        .filter(|t| t.account == account && customer_list(app, account, &t.list).is_some())
        .collect()
}

#[derive(Deserialize)]
struct CreateAudience {
    audience_type: Option<String>,
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    rule: Value,
}

/// `POST .../audiences`: a `CUSTOMER_LIST` audience of one of the account's lists.
async fn create_audience(
    State((app, pin)): Shared,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &pin, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(m) = digits("ad_account_id", &account) {
        return invalid(&app, &m);
    }
    let Ok(create) = serde_json::from_slice::<CreateAudience>(&body) else {
        return invalid(
            &app,
            "the body is not a JSON object of audience_type, name and rule",
        );
    };
    if create.audience_type.as_deref() != Some("CUSTOMER_LIST") {
        return invalid(
            &app,
            "audience_type: the sandbox emulates CUSTOMER_LIST audiences only",
        );
    }
    let name = create.name.unwrap_or_default();
    if name.trim().is_empty() {
        return invalid(&app, "name: required");
    }
    let list = create.rule["customer_list_id"].as_str().unwrap_or_default();
    if customer_list(&app, &account, list).is_none() {
        return invalid(
            &app,
            &format!("rule.customer_list_id: no customer list {list} in ad account {account}"),
        );
    }
    let audience = TargetingAudience {
        id: format!(
            "{}",
            2_542_620_000_000u64 + pin.next_audience.fetch_add(1, Ordering::Relaxed)
        ),
        account: account.clone(),
        name,
        description: create.description.unwrap_or_default(),
        list: list.to_string(),
        created: chrono::Utc::now().timestamp(),
    };
    pin.audiences.lock().unwrap().push(audience.clone());
    let answer = audience_json(&app, &pin, &audience);
    finish(&app, fault, axum::Json(answer).into_response())
}

/// `GET .../audiences`, paged.
async fn list_audiences(
    State((app, pin)): Shared,
    Path(account): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &pin, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(m) = digits("ad_account_id", &account) {
        return invalid(&app, &m);
    }
    let items: Vec<Value> = audiences_of(&app, &pin, &account)
        .iter()
        .map(|t| audience_json(&app, &pin, t))
        .collect();
    match page(&q, items) {
        Ok(page) => finish(&app, fault, axum::Json(page).into_response()),
        Err(m) => invalid(&app, &m),
    }
}

/// `GET .../audiences/{id}`.
async fn get_audience(
    State((app, pin)): Shared,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &pin, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let found = audiences_of(&app, &pin, &account)
        .into_iter()
        .find(|t| t.id == id);
    match found {
        Some(t) => finish(
            &app,
            fault,
            axum::Json(audience_json(&app, &pin, &t)).into_response(),
        ),
        None => not_found(
            &app,
            &format!("Audience {id} not found in ad account {account}."),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_lowercase_hex_hashes_or_for_e_mails_lowercase_text() {
        let sha256 = "0123456789abcdef".repeat(4);
        assert!(acceptable(&sha256, "MAID"));
        assert!(acceptable(&sha256[..40], "EMAIL"));
        assert!(acceptable(&sha256[..32], "IDFA"));
        assert!(!acceptable(&sha256.to_uppercase(), "EMAIL"));
        assert!(!acceptable(&sha256[..63], "EMAIL"));
        assert!(acceptable("a.b@example.com", "EMAIL"));
        assert!(!acceptable("A.b@example.com", "EMAIL"));
        assert!(!acceptable("a.b@example.com", "MAID"));
        assert!(!acceptable("6d92078a-8246-4ba4-ae5b-76104861e7dc", "MAID"));
    }

    #[test]
    fn pages_follow_their_bookmarks_to_the_end() {
        fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let first = page(&q(&[("page_size", "2")]), items.clone()).unwrap();
        assert_eq!(first, json!({"items": [0, 1], "bookmark": "2"}));
        let last = page(&q(&[("page_size", "2"), ("bookmark", "4")]), items.clone()).unwrap();
        assert_eq!(last, json!({"items": [4], "bookmark": null}));
        assert!(page(&q(&[("page_size", "251")]), items).is_err());
    }
}
