//! A recording endpoint for the generic REST destination: `/_sandbox/rest/{name}` takes POST,
//! PUT, PATCH and DELETE and keeps each request's method, headers and body in arrival order
//! (`GET` on the same path returns them). Fault injection applies (transient errors are 503,
//! throttling is 429 with `Retry-After: 1`); a JSON content type with a body that is not JSON
//! is refused with 400, as a real JSON API would. Headers that may carry a secret
//! (`Authorization`, and any whose name says token, key, secret or cookie) are kept as
//! `sha256:` and the first 12 hex digits of their value's SHA-256, never as sent: a test can
//! still tell that the right secret arrived, and nothing shows it.

use super::AppState;
use super::faults::Fault;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One request as the endpoint received it.
#[derive(Clone, Debug, Serialize)]
pub struct Recorded {
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

#[derive(Default)]
pub struct RestState {
    requests: Mutex<BTreeMap<String, Vec<Recorded>>>,
}

impl RestState {
    pub fn reset(&self) {
        self.requests.lock().unwrap().clear();
    }

    /// What the endpoint `name` received, in order.
    pub fn requests(&self, name: &str) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

/// A header's value as the recorder keeps it: masked where it may be a secret.
fn recorded_header(name: &str, value: &[u8]) -> String {
    let name = name.to_ascii_lowercase();
    let secret = [
        "authorization",
        "token",
        "key",
        "secret",
        "cookie",
        "signature",
        "auth",
        "pass",
        "credential",
        "session",
    ]
    .iter()
    .any(|s| name.contains(s));
    if !secret {
        return String::from_utf8_lossy(value).into_owned();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value);
    let mut hex = [0u8; 64];
    let _ = faster_hex::hex_encode(&digest, &mut hex);
    format!("sha256:{}…", String::from_utf8_lossy(&hex[..12]))
}

pub async fn endpoint(
    State(app): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET {
        return axum::Json(app.rest.requests(&name)).into_response();
    }
    app.store.with(|s| s.requests += 1);
    let fault = app
        .faults
        .decide(headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()))
        .await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response();
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response();
        }
        _ => {}
    }
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json_type && serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        app.store.with(|s| s.rejected += 1);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "the body is not valid JSON"})),
        )
            .into_response();
    }
    let recorded = Recorded {
        method: method.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), recorded_header(k.as_str(), v.as_bytes())))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    app.rest
        .requests
        .lock()
        .unwrap()
        .entry(name)
        .or_default()
        .push(recorded);
    app.store.with(|s| s.batches_accepted += 1);
    let response = axum::Json(json!({"ok": true})).into_response();
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::recorded_header;

    #[test]
    fn secret_headers_are_kept_as_a_digest_prefix() {
        let masked = recorded_header("Authorization", b"Bearer tok-123");
        assert!(
            masked.starts_with("sha256:") && !masked.contains("tok-123"),
            "{masked}"
        );
        assert_eq!(masked.chars().count(), "sha256:".len() + 12 + 1);
        assert!(!recorded_header("x-api-key", b"k-1").contains("k-1"));
        for name in ["X-Auth", "Api-Pass", "X-Credential", "X-Session-Id"] {
            assert!(!recorded_header(name, b"k-2").contains("k-2"), "{name}");
        }
        assert_eq!(
            recorded_header("content-type", b"application/json"),
            "application/json"
        );
    }
}
