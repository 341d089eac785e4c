//! Reading the Data Manager's answers: Google's JSON error model, retrying 429
//! RESOURCE_EXHAUSTED (after the RetryInfo delay), 500, 503 and 504.

use crate::destinations::http::{Verdict, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::Duration;

pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        return Verdict::Done(v);
    }
    let err = &v["error"];
    let mut why = format!(
        "HTTP {} {}: {}",
        status.as_u16(),
        err["status"].as_str().unwrap_or(""),
        err["message"].as_str().unwrap_or("no message")
    );
    let details = err["details"].as_array().cloned().unwrap_or_default();
    for d in &details {
        for violation in d["fieldViolations"].as_array().into_iter().flatten() {
            why.push_str(&format!(
                "; {}: {}",
                violation["field"].as_str().unwrap_or("?"),
                violation["description"].as_str().unwrap_or("")
            ));
        }
        if let Some(reason) = d["reason"].as_str() {
            why.push_str(&format!("; reason {reason}"));
        }
    }
    let retryable = matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504);
    if retryable {
        let hinted = details
            .iter()
            .find_map(|d| d["retryDelay"].as_str().and_then(parse_duration))
            .or_else(|| retry_after(headers));
        Verdict::Retry { after: hinted, why }
    } else {
        if status == StatusCode::UNAUTHORIZED {
            why.push_str("; the OAuth access token is missing, invalid or expired");
        }
        Verdict::Fail(why)
    }
}

/// A protobuf Duration in JSON: `"2s"`, `"1.5s"`.
fn parse_duration(s: &str) -> Option<Duration> {
    s.strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_quota_errors_after_their_delay() {
        let body = r#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}"#;
        match classify(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            body.as_bytes(),
        ) {
            Verdict::Retry { after, .. } => assert_eq!(after, Some(Duration::from_millis(1500))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"{}"),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn invalid_arguments_are_permanent_and_name_the_field() {
        let body = r#"{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad",
            "details": [{"fieldViolations": [{"field": "encoding", "description": "is required"}]}]}}"#;
        match classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), body.as_bytes()) {
            Verdict::Fail(m) => assert!(m.contains("encoding: is required"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
