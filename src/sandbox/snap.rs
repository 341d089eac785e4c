//! Snap Marketing API emulator: customer-list segments (shared/spec/platforms.md §4):
//! `GET|POST /v1/adaccounts/{id}/segments` (paged with `paging.next_link`) and
//! `POST|DELETE /v1/segments/{id}/users`. Bodies are checked: known schemas, rows aligned with
//! them, lowercase SHA-256 hex, at most 100,000 identifiers per request. Errors carry
//! `request_status: "ERROR"`, `request_id`, `debug_message`, `display_message`, `error_code`
//! (UNCONFIRMED set); HTTP 429 past the per-token request rate, 401 without a bearer token.
//! Each identifier is a member of its own (`{"EMAIL_SHA256": hash}`): Snap matches each one.

use super::AppState;
use super::faults::Fault;
use super::state::CallWindow;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SCHEMAS: &[&str] = &["EMAIL_SHA256", "PHONE_SHA256", "MOBILE_AD_ID_SHA256"];

#[derive(Clone, Debug)]
pub struct SnapLimits {
    pub max_identifiers_per_request: usize,
    /// Requests per second per token (Snap: 10 on average); `None` turns throttling off.
    pub requests_per_second: Option<u64>,
}

impl Default for SnapLimits {
    fn default() -> SnapLimits {
        SnapLimits {
            max_identifiers_per_request: crate::destinations::snap::MAX_IDENTIFIERS,
            requests_per_second: None,
        }
    }
}

#[derive(Default)]
pub struct SnapState {
    pub limits: Mutex<SnapLimits>,
    calls: CallWindow,
    next_request: AtomicU64,
}

fn request_id(app: &AppState) -> String {
    format!(
        "sandbox-{:012}",
        app.snap.next_request.fetch_add(1, Ordering::Relaxed)
    )
}

fn error(app: &AppState, status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "request_status": "ERROR",
            "request_id": request_id(app),
            "debug_message": message,
            "display_message": message,
            "error_code": code,
        })),
    )
        .into_response()
}

fn invalid(app: &AppState, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    error(app, StatusCode::BAD_REQUEST, "E1001", message)
}

async fn gate(app: &AppState, headers: &HeaderMap) -> Result<Fault, Response> {
    app.store.with(|s| s.requests += 1);
    let fault = app
        .faults
        .decide(headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()))
        .await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(error(
                app,
                StatusCode::INTERNAL_SERVER_ERROR,
                "E5000",
                "Internal server error",
            ));
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return Err(error(
                app,
                StatusCode::TOO_MANY_REQUESTS,
                "E1008",
                "Too many requests",
            ));
        }
        _ => {}
    }
    let rate = app.snap.limits.lock().unwrap().requests_per_second;
    if !app.snap.calls.admit(rate, Duration::from_secs(1)) {
        app.store.with(|s| s.rate_limited += 1);
        return Err(error(
            app,
            StatusCode::TOO_MANY_REQUESTS,
            "E1008",
            "Too many requests",
        ));
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.is_empty());
    if !bearer {
        return Err(error(
            app,
            StatusCode::UNAUTHORIZED,
            "E3003",
            "Unauthorized: a Bearer token is required",
        ));
    }
    Ok(fault)
}

fn finish(app: &AppState, fault: Fault, response: Response) -> Response {
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

fn segment_json(a: &super::state::Audience) -> Value {
    json!({
        "id": a.id, "name": a.name, "ad_account_id": a.account, "source_type": "FIRST_PARTY",
        "status": "ACTIVE", "upload_status": if a.size > 0 { "COMPLETE" } else { "NO_UPLOAD" },
        "approximate_number_users": a.size,
        "targetable_status": if a.size >= 1000 { "READY" } else { "TOO_FEW_USERS" },
    })
}

/// `GET` (paged by `cursor` and `limit`) and `POST` of an ad account's segments.
pub async fn segments(
    State(app): State<AppState>,
    Path(account): Path<String>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let response = if method == Method::GET {
        let limit: usize = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(50)
            .clamp(1, 1000);
        let cursor: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
        let all: Vec<_> = app
            .store
            .list()
            .into_iter()
            .filter(|a| a.platform == "snap" && a.account == account)
            .collect();
        let page: Vec<Value> = all
            .iter()
            .skip(cursor)
            .take(limit)
            .map(|a| json!({"sub_request_status": "SUCCESS", "segment": segment_json(a)}))
            .collect();
        let mut answer =
            json!({"request_status": "SUCCESS", "request_id": request_id(&app), "segments": page});
        if cursor + limit < all.len() {
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            answer["paging"] = json!({"next_link": format!(
                "http://{host}/v1/adaccounts/{account}/segments?cursor={}&limit={limit}", cursor + limit
            )});
        }
        axum::Json(answer).into_response()
    } else {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(requested) = v["segments"].as_array().filter(|s| !s.is_empty()) else {
            return invalid(&app, "segments: at least one segment is required");
        };
        let mut created = vec![];
        for s in requested {
            let name = s["name"].as_str().unwrap_or_default();
            if name.is_empty() || name.chars().count() > 375 {
                return invalid(&app, "segments.name: 1 to 375 characters are required");
            }
            if s["source_type"] != "FIRST_PARTY" {
                return invalid(
                    &app,
                    "segments.source_type: must be FIRST_PARTY for a customer list",
                );
            }
            let a = app.store.create("snap", &account, name);
            created.push(json!({"sub_request_status": "SUCCESS", "segment": segment_json(&a)}));
        }
        axum::Json(json!({"request_status": "SUCCESS", "request_id": request_id(&app), "segments": created}))
            .into_response()
    };
    finish(&app, fault, response)
}

/// `POST` (add) and `DELETE` (remove) of a segment's users.
pub async fn users(
    State(app): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
    if app.store.get(&id).is_none_or(|a| a.platform != "snap") {
        app.store.with(|s| s.rejected += 1);
        return error(
            &app,
            StatusCode::NOT_FOUND,
            "E2004",
            &format!("Segment {id} not found"),
        );
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(elements) = v["users"].as_array().filter(|u| !u.is_empty()) else {
        return invalid(&app, "users: at least one users element is required");
    };
    let mut members = vec![];
    let mut answers = vec![];
    for (i, e) in elements.iter().enumerate() {
        let schema: Vec<&str> = e["schema"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .collect();
        if schema.is_empty() || schema.iter().any(|s| !SCHEMAS.contains(s)) {
            return invalid(
                &app,
                &format!("users[{i}].schema: use {}", SCHEMAS.join(", ")),
            );
        }
        let Some(rows) = e["data"].as_array() else {
            return invalid(&app, &format!("users[{i}].data is required"));
        };
        for (r, row) in rows.iter().enumerate() {
            let values = row.as_array().filter(|v| v.len() == schema.len());
            let Some(values) = values else {
                return invalid(
                    &app,
                    &format!("users[{i}].data[{r}]: a row must align with the schema"),
                );
            };
            for (s, value) in schema.iter().zip(values) {
                let hash = value.as_str().unwrap_or_default();
                if hash.len() != 64
                    || !hash
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return invalid(
                        &app,
                        &format!("users[{i}].data[{r}]: {s} must be a lowercase SHA-256 hex hash"),
                    );
                }
                members.push(super::state::single_key_member(s, hash));
            }
        }
        answers.push(
            json!({"sub_request_status": "SUCCESS", "user": {"number_uploaded_users": rows.len()}}),
        );
    }
    let max = app.snap.limits.lock().unwrap().max_identifiers_per_request;
    app.store
        .with(|s| s.max_rows_per_request = s.max_rows_per_request.max(members.len() as u64));
    if members.len() > max {
        return invalid(
            &app,
            &format!(
                "users: {} identifiers; at most {max} per request",
                members.len()
            ),
        );
    }
    app.store.apply(
        &id,
        None,
        method != Method::DELETE,
        members.into_iter().collect(),
        false,
    );
    let response = axum::Json(
        json!({"request_status": "SUCCESS", "request_id": request_id(&app), "users": answers}),
    )
    .into_response();
    finish(&app, fault, response)
}
