//! Reading Pinterest's answers (platforms-more.md §C; platforms.md §10): HTTP 429 (throttling,
//! no documented wait hint; a `Retry-After` is honoured if one comes) and 5xx are retried; other
//! 4xx are permanent. Errors are `{"code": int, "message": string}`; the report gives the status,
//! the code and the message, with any run of hex digits as long as a hash masked and the whole
//! cut short, in case a message quotes a record.

use crate::destinations::http::{Verdict, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// The longest part of a platform message that is shown.
const MAX_MESSAGE_CHARS: usize = 300;

pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        return Verdict::Done(v);
    }
    let why = describe(status, &v);
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Verdict::Retry {
            after: retry_after(headers),
            why,
        };
    }
    Verdict::Fail(match status {
        StatusCode::UNAUTHORIZED => format!(
            "{why}; the OAuth access token is missing, invalid or expired: refresh it (a Pinterest user's token \
             with the ads:read and ads:write scopes)"
        ),
        StatusCode::FORBIDDEN => format!(
            "{why}; the token's user may not manage this ad account's audiences, or the token lacks the ads:write scope"
        ),
        StatusCode::BAD_REQUEST => format!("{why}; Pinterest refused the request as sent"),
        _ => why,
    })
}

/// `HTTP 400 code 1: message`, the message masked.
fn describe(status: StatusCode, v: &Value) -> String {
    let code = match &v["code"] {
        Value::Number(n) => format!(" code {n}"),
        _ => String::new(),
    };
    let message = v["message"]
        .as_str()
        .map(masked)
        .unwrap_or_else(|| "no message".to_string());
    format!("HTTP {}{code}: {message}", status.as_u16())
}

/// A platform message fit for a log: runs of 32 or more hex digits (an MD5, SHA-1 or SHA-256
/// in hex) replaced, and cut at `MAX_MESSAGE_CHARS`.
pub fn masked(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS + 16));
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 32 {
            out.push_str("(hash, not shown)");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in message.chars().take(MAX_MESSAGE_CHARS) {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    if message.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
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
            verdict(200, r#"{"id": "643", "status": "READY"}"#),
            Verdict::Done(_)
        ));
        assert!(matches!(
            verdict(429, r#"{"code": 8, "message": "rate limit"}"#),
            Verdict::Retry { .. }
        ));
        assert!(matches!(verdict(503, "<html>"), Verdict::Retry { .. }));
        match verdict(401, r#"{"code": 2, "message": "Authentication failed."}"#) {
            Verdict::Fail(m) => assert!(
                m.contains("HTTP 401 code 2: Authentication failed.") && m.contains("refresh"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match verdict(404, "not json") {
            Verdict::Fail(m) => assert_eq!(m, "HTTP 404: no message"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_lose_their_hashes_and_their_tail() {
        let hash = "0123456789abcdef".repeat(4);
        let message = format!("Invalid record {hash} at 12 (id 643)");
        assert_eq!(
            masked(&message),
            "Invalid record (hash, not shown) at 12 (id 643)"
        );
        let long = "x".repeat(400);
        assert_eq!(masked(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
