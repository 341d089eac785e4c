//! Reading Snap's answers: HTTP 429 (throttling, no documented wait hint) and 5xx are retried;
//! 400 and the other 4xx are permanent. Errors carry `request_status: "ERROR"`, `request_id`,
//! `debug_message`, `display_message` and `error_code` (UNCONFIRMED field set), as may a
//! sub-request of an otherwise successful answer, which fails the call too: its members were
//! not taken.

use crate::destinations::http::{Verdict, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let describe = |e: &Value| {
        format!(
            "HTTP {}{}: {}{}",
            status.as_u16(),
            e["error_code"]
                .as_str()
                .map(|c| format!(" {c}"))
                .unwrap_or_default(),
            e["debug_message"]
                .as_str()
                .or(e["display_message"].as_str())
                .unwrap_or("no message"),
            v["request_id"]
                .as_str()
                .map(|r| format!(" (request_id {r})"))
                .unwrap_or_default()
        )
    };
    if status.is_success() {
        let failed_sub_request = ["users", "segments"]
            .iter()
            .flat_map(|k| v[*k].as_array().into_iter().flatten())
            .find(|s| s["sub_request_status"] == "ERROR");
        return match (v["request_status"].as_str(), failed_sub_request) {
            (Some("ERROR"), _) => Verdict::Fail(describe(&v)),
            (_, Some(sub)) => Verdict::Fail(describe(sub)),
            _ => Verdict::Done(v),
        };
    }
    let why = describe(&v);
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Verdict::Retry {
            after: retry_after(headers),
            why,
        }
    } else if status == StatusCode::UNAUTHORIZED {
        Verdict::Fail(format!(
            "{why}; the OAuth access token is missing, invalid or expired: refresh it"
        ))
    } else {
        Verdict::Fail(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(status: u16, body: &str) -> Verdict<Value> {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn statuses_decide() {
        assert!(matches!(
            verdict(
                200,
                r#"{"request_status": "SUCCESS", "users": [{"sub_request_status": "SUCCESS"}]}"#
            ),
            Verdict::Done(_)
        ));
        assert!(matches!(verdict(429, "{}"), Verdict::Retry { .. }));
        assert!(matches!(verdict(503, "<html>"), Verdict::Retry { .. }));
        match verdict(
            400,
            r#"{"request_status": "ERROR", "request_id": "r9", "debug_message": "Invalid hash", "error_code": "E1001"}"#,
        ) {
            Verdict::Fail(m) => assert!(
                m.contains("E1001") && m.contains("Invalid hash") && m.contains("r9"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match verdict(401, "{}") {
            Verdict::Fail(m) => assert!(m.contains("refresh"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verdict(
                200,
                r#"{"request_status": "SUCCESS", "users": [{"sub_request_status": "ERROR", "debug_message": "bad"}]}"#
            ),
            Verdict::Fail(_)
        ));
    }
}
