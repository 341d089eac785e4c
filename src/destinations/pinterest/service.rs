//! Reading Pinterest's answers (platforms-more.md §C; platforms.md §10): HTTP 429 (throttling,
//! no documented wait hint; a `Retry-After` is honoured if one comes) and 5xx are retried; other
//! 4xx are permanent. Errors are `{"code": int, "message": string}`; the report gives the status,
//! the code and the message, the message withheld when it could quote a record
//! (`platform_message`) and cut short otherwise.

use crate::destinations::http::{Verdict, platform_message, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

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

/// `HTTP 400 code 1: message`, the message withheld when it could quote a record.
fn describe(status: StatusCode, v: &Value) -> String {
    let code = match &v["code"] {
        Value::Number(n) => format!(" code {n}"),
        _ => String::new(),
    };
    let message = match v["message"].as_str() {
        None => "no message".to_string(),
        Some(m) => platform_message(m).unwrap_or_else(|| "message withheld".to_string()),
    };
    format!("HTTP {}{code}: {message}", status.as_u16())
}

/// The longest part of a message `masked` shows.
const MAX_MESSAGE_CHARS: usize = 300;

/// A platform message with runs of 32 or more hex digits replaced, cut at `MAX_MESSAGE_CHARS`.
/// Pinterest's own answers no longer go through it (`platform_message` withholds what could
/// quote a record, `@` included, over the whole text); kept for the X destination, which uses
/// it, until it moves to `platform_message` too.
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
    fn messages_that_could_quote_a_record_are_withheld() {
        let hash = "0123456789abcdef".repeat(4);
        // Past the first 300 characters too.
        let message = format!("{} Invalid record {hash} at 12", "x".repeat(300));
        let body = serde_json::json!({"code": 1, "message": message}).to_string();
        match verdict(400, &body) {
            Verdict::Fail(m) => assert!(
                m.starts_with("HTTP 400 code 1: message withheld") && !m.contains(&hash),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match verdict(
            400,
            r#"{"code": 1, "message": "Invalid record a@b.example"}"#,
        ) {
            Verdict::Fail(m) => assert!(!m.contains('@'), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
