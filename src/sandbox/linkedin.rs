//! LinkedIn Marketing API emulator: Matched Audiences DMP segments of users
//! (shared/spec/platforms-more.md §A), under the versioned base `/rest`:
//!
//! - `POST /rest/dmpSegments`: create, from `name`, `account` (`urn:li:sponsoredAccount:{id}`),
//!   `type` (`USER` or `COMPANY`), `sourcePlatform` (an enum in capitals) and `destinations`
//!   naming `LINKEDIN`; 201 with no body and the id in `x-restli-id`; 422 naming the field
//!   otherwise
//! - `GET /rest/dmpSegments?q=account&account=…[&start=…&count=…]`: the account finder, paged
//!   (every segment at once when neither `start` nor `count` is given, as LinkedIn documents),
//!   `count` capped at 100, with `paging: {start, count, total}`
//! - `GET /rest/dmpSegments/{id}`: one segment, `destinations[0]` with its `status` (`READY`
//!   from 300 members, LinkedIn's least audience to serve; `BUILDING` below) and `audienceSize`
//! - `POST /rest/dmpSegments/{id}/users` with `X-RestLi-Method: BATCH_CREATE`: `{"elements":
//!   [{"action": "ADD"|"REMOVE", "userIds": [{"idType", "idValue"}], "firstName"?, …}]}`, 1 to
//!   5,000 elements; 200 with a status per element, index-aligned: 201, or 400 with an `error`
//!   for an element refused (an unknown `idType`, an `idValue` not in its type's format:
//!   `SHA256_EMAIL` 64 and `SHA512_EMAIL` 128 lowercase hex digits, `GOOGLE_AID` a UUID; no user
//!   ID and no first and last name), which is not applied while the others are
//!
//! Checks on every call, in this order: faults; past `app.rate("linkedin")` calls in a rolling
//! second, 429 without `Retry-After` (LinkedIn sends none); a bearer token (401, serviceErrorCode
//! 65604, without one; a token starting `expired` is answered as an expired one is, 401 65602,
//! which is how tests reach that path); `X-Restli-Protocol-Version: 2.0.0` (400 without it);
//! `LinkedIn-Version` as `YYYYMM` or `YYYYMM.RR` (400 `VERSION_MISSING` without it, 426
//! `NONEXISTENT_VERSION` for a month not come yet; sunset versions are not refused, so the tests
//! do not break as months pass). A segment just created answers its first users call 404
//! "Could not find DMP segment", as LinkedIn does for seconds after a create, so that clients'
//! retry of it is exercised. Faults as every emulator: the `X-Sandbox-Fault` header, the rates of
//! `FaultConfig` (errors are 500, throttling 429), and its `invalid_row_rate` as elements refused
//! with status 400. Error bodies are Rest.li's `{"status", "code", "serviceErrorCode"?,
//! "message"}`; codes and service error codes UNCONFIRMED beyond the status.
//!
//! Each user ID is a member of its own (`{"SHA256_EMAIL": hash}`, `{"GOOGLE_AID": id}`), and
//! adding an ID again or removing one not there changes nothing and answers 201, as LinkedIn
//! documents ("by design"). An element with no user ID but a first and last name is a member of
//! its names. Company segments can be created and listed; their `/companies` are not emulated.

// Checks answer with the platform's error `Response`; a handler returns it as it is.
#![allow(clippy::result_large_err)]

use super::AppState;
use super::faults::Fault;
use super::state::{Audience, CallWindow, MemberBatch, single_key_member};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Datelike;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Elements per BATCH_CREATE.
pub const MAX_ELEMENTS: usize = 5_000;
/// The most segments a page of the account finder holds, whatever `count` asks for.
pub const MAX_PAGE: usize = 100;
/// The fewest members a segment serves with, so the emulator calls it `READY`.
pub const READY_SIZE: usize = 300;
const ACCOUNT_URN: &str = "urn:li:sponsoredAccount:";

/// What the emulator knows of its segments beyond the shared store.
#[derive(Default)]
pub struct LinkedInState {
    calls: CallWindow,
    segments: Mutex<HashMap<String, Segment>>,
}

struct Segment {
    /// `USER` or `COMPANY`.
    kind: String,
    source_platform: String,
    /// Whether its first users call has been answered "not found".
    ready: bool,
}

type Shared = (AppState, Arc<LinkedInState>);

/// The emulator's routes, with their state.
pub fn routes(app: AppState) -> Router {
    Router::new()
        .route("/rest/dmpSegments", get(find_segments).post(create_segment))
        .route("/rest/dmpSegments/{id}", get(get_segment))
        .route("/rest/dmpSegments/{id}/users", post(users))
        .with_state((app, Arc::new(LinkedInState::default())))
}

fn error(status: StatusCode, code: &str, service_code: Option<u64>, message: &str) -> Response {
    let mut body = json!({"status": status.as_u16(), "code": code, "message": message});
    if let Some(c) = service_code {
        body["serviceErrorCode"] = json!(c);
    }
    (status, axum::Json(body)).into_response()
}

/// A request refused as a whole, counted.
fn invalid(app: &AppState, status: StatusCode, code: &str, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    error(status, code, None, message)
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        None,
        &format!("Could not find DMP segment {id}"),
    )
}

/// No `Retry-After`: LinkedIn's quotas come without a wait hint.
fn throttled() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        None,
        "Resource level throttle limit for calls to this resource is reached.",
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Faults, the request rate, the token and the Rest.li headers, shared by every route; `Err`
/// ends the request.
async fn gate(app: &AppState, li: &LinkedInState, headers: &HeaderMap) -> Result<Fault, Response> {
    app.store.with(|s| s.requests += 1);
    let fault = app.faults.decide(header(headers, "x-sandbox-fault")).await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                None,
                "Internal Server Error",
            ));
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return Err(throttled());
        }
        _ => {}
    }
    if !li.calls.admit(app.rate("linkedin"), Duration::from_secs(1)) {
        app.store.with(|s| s.rate_limited += 1);
        return Err(throttled());
    }
    check_token(headers)?;
    check_versions(headers).inspect_err(|_| {
        app.store.with(|s| s.rejected += 1);
    })?;
    Ok(fault)
}

fn check_token(headers: &HeaderMap) -> Result<(), Response> {
    let token = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "EMPTY_ACCESS_TOKEN",
            Some(65604),
            "Empty oauth2 access token",
        ));
    }
    if token.starts_with("expired") {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "EXPIRED_ACCESS_TOKEN",
            Some(65602),
            "The token used in the request has expired",
        ));
    }
    Ok(())
}

fn check_versions(headers: &HeaderMap) -> Result<(), Response> {
    if header(headers, "x-restli-protocol-version") != Some("2.0.0") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "PROTOCOL_VERSION_REQUIRED",
            None,
            "DMP segment requests are in Rest.li protocol 2.0.0: send X-Restli-Protocol-Version: 2.0.0",
        ));
    }
    let Some(version) = header(headers, "linkedin-version") else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "VERSION_MISSING",
            None,
            "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
        ));
    };
    let Some(month) = version_month(version) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "INVALID_VERSION",
            None,
            "LinkedIn-Version must be YYYYMM or YYYYMM.RR",
        ));
    };
    let now = chrono::Utc::now();
    if month > now.year() as u32 * 100 + now.month() {
        return Err(error(
            StatusCode::UPGRADE_REQUIRED,
            "NONEXISTENT_VERSION",
            None,
            &format!("Requested version {version} is not active"),
        ));
    }
    Ok(())
}

/// `202604` of `202604` or `202604.01`.
fn version_month(version: &str) -> Option<u32> {
    let (month, revision) = match version.split_once('.') {
        Some((m, r)) => (m, Some(r)),
        None => (version, None),
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(month, 6) || revision.is_some_and(|r| !digits(r, 2)) {
        return None;
    }
    let value: u32 = month.parse().ok()?;
    (1..=12).contains(&(value % 100)).then_some(value)
}

fn finish(app: &AppState, fault: Fault, response: Response) -> Response {
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

fn segment_json(a: &Audience, segment: Option<&Segment>) -> Value {
    json!({
        "id": a.id.parse::<u64>().unwrap_or_default(),
        "name": a.name,
        "account": format!("{ACCOUNT_URN}{}", a.account),
        "type": segment.map_or("USER", |s| s.kind.as_str()),
        "sourcePlatform": segment.map_or("", |s| s.source_platform.as_str()),
        "accessPolicy": "PRIVATE",
        "destinations": [{
            "destination": "LINKEDIN",
            "status": if a.size >= READY_SIZE { "READY" } else { "BUILDING" },
            "audienceSize": a.size,
            "matchedCount": a.size,
        }],
    })
}

/// A create's fields, checked.
struct NewSegment<'a> {
    name: &'a str,
    /// The account's digits.
    account: &'a str,
    kind: &'a str,
    source_platform: &'a str,
}

fn new_segment(v: &Value) -> Result<NewSegment<'_>, String> {
    let name = v["name"]
        .as_str()
        .filter(|n| !n.trim().is_empty())
        .ok_or("name: a segment needs a name")?;
    let account = v["account"]
        .as_str()
        .and_then(|a| a.strip_prefix(ACCOUNT_URN))
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("account: expected urn:li:sponsoredAccount:{id}")?;
    let kind = v["type"]
        .as_str()
        .filter(|t| matches!(*t, "USER" | "COMPANY"))
        .ok_or("type: USER or COMPANY")?;
    let source_platform = v["sourcePlatform"]
        .as_str()
        .filter(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .ok_or("sourcePlatform: the enum value LinkedIn assigned the partner is required")?;
    let to_linkedin = v["destinations"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| d["destination"] == "LINKEDIN"));
    if !to_linkedin {
        return Err("destinations: must include {\"destination\": \"LINKEDIN\"}".into());
    }
    Ok(NewSegment {
        name,
        account,
        kind,
        source_platform,
    })
}

/// `POST /rest/dmpSegments`.
async fn create_segment(
    State((app, li)): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &li, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(m) = header(&headers, "x-restli-method")
        && !m.eq_ignore_ascii_case("CREATE")
    {
        return invalid(
            &app,
            StatusCode::BAD_REQUEST,
            "INVALID_METHOD",
            &format!("X-RestLi-Method {m} is not supported on /dmpSegments: create with CREATE"),
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return invalid(
            &app,
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
            "the body is not JSON",
        );
    };
    let segment = match new_segment(&v) {
        Ok(s) => s,
        Err(m) => {
            return invalid(
                &app,
                StatusCode::UNPROCESSABLE_ENTITY,
                "FIELD_VALUE_ERROR",
                &m,
            );
        }
    };
    let a = app.store.create("linkedin", segment.account, segment.name);
    li.segments.lock().unwrap().insert(
        a.id.clone(),
        Segment {
            kind: segment.kind.to_string(),
            source_platform: segment.source_platform.to_string(),
            ready: false,
        },
    );
    let response = (
        StatusCode::CREATED,
        [
            ("x-restli-id", a.id.clone()),
            ("location", format!("/dmpSegments/{}", a.id)),
        ],
        (),
    )
        .into_response();
    finish(&app, fault, response)
}

/// `GET /rest/dmpSegments?q=account&account=…`.
async fn find_segments(
    State((app, li)): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &li, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if q.get("q").map(String::as_str) != Some("account") {
        return invalid(
            &app,
            StatusCode::BAD_REQUEST,
            "INVALID_FINDER",
            "q: only the account finder (q=account) is emulated",
        );
    }
    let Some(account) = q.get("account").and_then(|a| a.strip_prefix(ACCOUNT_URN)) else {
        return invalid(
            &app,
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
            "account: expected urn:li:sponsoredAccount:{id}",
        );
    };
    let all: Vec<Audience> = app
        .store
        .list()
        .into_iter()
        .filter(|a| a.platform == "linkedin" && a.account == account)
        .collect();
    let number = |key: &str| q.get(key).and_then(|v| v.parse::<usize>().ok());
    let paged = q.contains_key("start") || q.contains_key("count");
    let start = number("start").unwrap_or(0);
    let count = match paged {
        true => number("count").unwrap_or(10).min(MAX_PAGE),
        false => all.len(),
    };
    let elements: Vec<Value> = {
        let segments = li.segments.lock().unwrap();
        all.iter()
            .skip(start)
            .take(count)
            .map(|a| segment_json(a, segments.get(&a.id)))
            .collect()
    };
    let response = axum::Json(json!({
        "elements": elements,
        "paging": {"start": start, "count": count, "total": all.len(), "links": []},
    }))
    .into_response();
    finish(&app, fault, response)
}

/// `GET /rest/dmpSegments/{id}`.
async fn get_segment(
    State((app, li)): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &li, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(a) = app.store.get(&id).filter(|a| a.platform == "linkedin") else {
        app.store.with(|s| s.rejected += 1);
        return not_found(&id);
    };
    let segment = {
        let segments = li.segments.lock().unwrap();
        segment_json(&a, segments.get(&id))
    };
    finish(&app, fault, axum::Json(segment).into_response())
}

/// `POST /rest/dmpSegments/{id}/users` (BATCH_CREATE).
async fn users(
    State((app, li)): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &li, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
    if header(&headers, "x-restli-method").is_none_or(|m| !m.eq_ignore_ascii_case("BATCH_CREATE")) {
        return invalid(
            &app,
            StatusCode::BAD_REQUEST,
            "INVALID_METHOD",
            "users are added and removed in batches: send X-RestLi-Method: BATCH_CREATE and {\"elements\": [...]}",
        );
    }
    if app.store.get(&id).is_none_or(|a| a.platform != "linkedin") {
        app.store.with(|s| s.rejected += 1);
        return not_found(&id);
    }
    if let Err(response) = usable(&app, &li, &id) {
        return response;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(elements) = v["elements"].as_array().filter(|e| !e.is_empty()) else {
        return invalid(
            &app,
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            "elements: at least one element is required",
        );
    };
    app.store
        .with(|s| s.max_rows_per_request = s.max_rows_per_request.max(elements.len() as u64));
    if elements.len() > MAX_ELEMENTS {
        return invalid(
            &app,
            StatusCode::BAD_REQUEST,
            "TOO_MANY_ELEMENTS",
            &format!(
                "elements: {} in one request; at most {MAX_ELEMENTS}",
                elements.len()
            ),
        );
    }
    let (statuses, changes) = apply_elements(&app, elements);
    for (add, members) in changes {
        app.store.apply(&id, None, add, members, false);
    }
    finish(
        &app,
        fault,
        axum::Json(json!({ "elements": statuses })).into_response(),
    )
}

/// Whether the segment takes users now: a company segment never does, and a segment just
/// created answers its first users call "not found".
fn usable(app: &AppState, li: &LinkedInState, id: &str) -> Result<(), Response> {
    let mut segments = li.segments.lock().unwrap();
    // A segment the store has and this state does not (a reset in between) is a ready one.
    let segment = segments.entry(id.to_string()).or_insert_with(|| Segment {
        kind: "USER".into(),
        source_platform: String::new(),
        ready: true,
    });
    if segment.kind != "USER" {
        return Err(invalid(
            app,
            StatusCode::BAD_REQUEST,
            "INVALID_SEGMENT_TYPE",
            &format!(
                "DMP segment {id} is a {} segment: users go to USER segments",
                segment.kind
            ),
        ));
    }
    if !segment.ready {
        segment.ready = true;
        return Err(not_found(id));
    }
    Ok(())
}

/// Each element's status, and the changes of those accepted: runs of adds and removes, in
/// the elements' order.
fn apply_elements(app: &AppState, elements: &[Value]) -> (Vec<Value>, Vec<(bool, MemberBatch)>) {
    let mut refuse = app.faults.invalid_rows();
    let mut statuses = Vec::with_capacity(elements.len());
    let mut changes: Vec<(bool, MemberBatch)> = vec![];
    for (i, element) in elements.iter().enumerate() {
        let (add, members) = match element_members(element) {
            Ok(_) if refuse() => {
                statuses.push(refused(
                    i,
                    "the element could not be processed (sandbox: invalid_row_rate)",
                ));
                continue;
            }
            Ok(accepted) => accepted,
            Err(why) => {
                statuses.push(refused(i, &why));
                continue;
            }
        };
        if changes.last().is_none_or(|(a, _)| *a != add) {
            changes.push((add, MemberBatch::default()));
        }
        let (_, batch) = changes.last_mut().expect("a run was pushed");
        for m in &members {
            batch.push(m);
        }
        statuses.push(json!({"status": 201}));
    }
    (statuses, changes)
}

fn refused(i: usize, why: &str) -> Value {
    json!({"status": 400, "error": {
        "status": 400,
        "code": "INVALID_ELEMENT",
        "message": format!("elements[{i}].{why}"),
    }})
}

/// An element's action (add or not) and the members it names, or why it is refused.
fn element_members(e: &Value) -> Result<(bool, Vec<String>), String> {
    let add = match e["action"].as_str() {
        Some("ADD") => true,
        Some("REMOVE") => false,
        _ => return Err("action: ADD or REMOVE".into()),
    };
    for field in ["firstName", "lastName", "title", "company", "country"] {
        if !e[field].is_null() && !e[field].is_string() {
            return Err(format!("{field}: a string"));
        }
    }
    let mut members = vec![];
    match &e["userIds"] {
        Value::Null => {}
        Value::Array(ids) => {
            for (j, id) in ids.iter().enumerate() {
                let id_type = id["idType"].as_str().unwrap_or_default();
                let value = id["idValue"].as_str().unwrap_or_default();
                check_id(id_type, value).map_err(|why| format!("userIds[{j}].{why}"))?;
                members.push(single_key_member(id_type, value));
            }
        }
        _ => return Err("userIds: a list of {idType, idValue}".into()),
    }
    if members.is_empty() {
        let name = |field: &str| e[field].as_str().map(str::trim).filter(|n| !n.is_empty());
        match (name("firstName"), name("lastName")) {
            (Some(first), Some(last)) => {
                members.push(json!({"firstName": first, "lastName": last}).to_string())
            }
            _ => return Err("userIds: at least one user ID, or firstName and lastName".into()),
        }
    }
    Ok((add, members))
}

/// Whether a user ID's value is in its type's format.
fn check_id(id_type: &str, value: &str) -> Result<(), String> {
    let hex = |n: usize| {
        value.len() == n
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = match id_type {
        "SHA256_EMAIL" => hex(64),
        "SHA512_EMAIL" => hex(128),
        "GOOGLE_AID" => is_uuid(value),
        other => {
            return Err(format!(
                "idType: {other:?} is not taken: use SHA256_EMAIL, SHA512_EMAIL or GOOGLE_AID"
            ));
        }
    };
    match ok {
        true => Ok(()),
        false => Err(format!("idValue: not a valid {id_type}")),
    }
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(v: &str) -> bool {
    v.len() == 36
        && v.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_ids_are_checked_as_linkedin_documents_them() {
        assert_eq!(version_month("202604"), Some(202604));
        assert_eq!(version_month("202604.01"), Some(202604));
        for bad in ["2026-04", "202613", "202604.1", "v202604", ""] {
            assert_eq!(version_month(bad), None, "{bad}");
        }
        assert!(check_id("SHA256_EMAIL", &"ab".repeat(32)).is_ok());
        assert!(check_id("SHA256_EMAIL", &"AB".repeat(32)).is_err());
        assert!(check_id("SHA512_EMAIL", &"0".repeat(128)).is_ok());
        assert!(check_id("GOOGLE_AID", "6d92078a-8246-4ba4-ae5b-76104861e7dc").is_ok());
        assert!(check_id("GOOGLE_AID", "6d92078a82464ba4ae5b76104861e7dc").is_err());
        assert!(check_id("APPLE_IDFA", "6d92078a-8246-4ba4-ae5b-76104861e7dc").is_err());
    }

    #[test]
    fn an_element_names_its_ids_or_its_names() {
        let hash = "ab".repeat(32);
        let (add, members) = element_members(&json!({"action": "REMOVE", "userIds": [
            {"idType": "SHA256_EMAIL", "idValue": hash},
            {"idType": "GOOGLE_AID", "idValue": "6d92078a-8246-4ba4-ae5b-76104861e7dc"},
        ]}))
        .unwrap();
        assert!(!add);
        assert_eq!(members.len(), 2);
        assert!(
            element_members(&json!({"action": "ADD", "firstName": "A", "lastName": "B"})).is_ok()
        );
        assert!(element_members(&json!({"action": "ADD", "firstName": "A"})).is_err());
        assert!(element_members(&json!({"action": "UPSERT", "userIds": []})).is_err());
    }
}
