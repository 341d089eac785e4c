//! Reading TikTok's answers. Business errors come as HTTP 200 with a non-zero `code` in the
//! envelope `{code, message, request_id, data}`, so the code decides, not the status. TikTok
//! publishes no mapping the spec could confirm; by the documented classes: 40100 is the QPS limit
//! and 5xxxx are system errors, both worth a retry; other 4xxxx are parameter, permission or
//! token errors that a retry cannot fix. Gateway answers (HTTP 429, 5xx) are retried too.

use crate::destinations::http::{Verdict, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// "Too many requests": the app's QPS limit (UNCONFIRMED code, the one commonly seen).
const THROTTLED: u64 = 40100;
/// Access token missing, invalid or expired (UNCONFIRMED codes, the ones commonly seen).
const TOKEN_ERRORS: &[u64] = &[40104, 40105];

/// `Done` with the envelope's `data`.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Verdict::Retry {
            after: retry_after(headers),
            why: format!("HTTP {}", status.as_u16()),
        };
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(code) = v["code"].as_u64() else {
        return Verdict::Fail(format!(
            "HTTP {}: the answer is not TikTok's JSON envelope; check base_url and api_version",
            status.as_u16()
        ));
    };
    if code == 0 {
        return Verdict::Done(v["data"].clone());
    }
    let why = format!(
        "code {code}: {} (request_id {})",
        v["message"].as_str().unwrap_or("no message"),
        v["request_id"].as_str().unwrap_or("none")
    );
    if code == THROTTLED || code >= 50000 {
        Verdict::Retry { after: None, why }
    } else if TOKEN_ERRORS.contains(&code) {
        Verdict::Fail(format!(
            "{why}; the access token is missing, invalid or expired: renew it"
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
    fn the_code_inside_http_200_decides() {
        match verdict(
            200,
            r#"{"code": 0, "message": "OK", "data": {"file_path": "p"}}"#,
        ) {
            Verdict::Done(d) => assert_eq!(d["file_path"], "p"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verdict(200, r#"{"code": 40100, "message": "Too many requests"}"#),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(200, r#"{"code": 50000, "message": "System error"}"#),
            Verdict::Retry { .. }
        ));
        match verdict(
            200,
            r#"{"code": 40002, "message": "file_signature mismatch", "request_id": "r1"}"#,
        ) {
            Verdict::Fail(m) => assert!(m.contains("40002") && m.contains("r1"), "{m}"),
            other => panic!("{other:?}"),
        }
        match verdict(200, r#"{"code": 40105, "message": "token"}"#) {
            Verdict::Fail(m) => assert!(m.contains("renew"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(verdict(503, "<html>"), Verdict::Retry { .. }));
        assert!(matches!(verdict(404, "<html>"), Verdict::Fail(_)));
    }
}
