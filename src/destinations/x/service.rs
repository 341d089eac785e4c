//! Reading X's answers (platforms-more.md §F; X's "Error codes and responses" and "Rate limiting"
//! pages): HTTP 429 is retried once the rate window resets (`x-rate-limit-reset`, epoch seconds),
//! 5xx are retried (a `Retry-After` is honoured, as X's best practices ask on 503); other 4xx are
//! permanent. Errors are `{"errors": [{"code": "CAPS_CASE", "message": …}]}`, and a users request
//! X refuses item by item also has `operation_errors`, index-aligned with the operations sent: the
//! report gives the status, the first error's code and message, and the first refused operations
//! by place, each message withheld when it could quote a value (`platform_message`) and cut short
//! otherwise.
//!
//! An accepted users answer is `{"data": {"success_count", "total_count"}}`; both must equal the
//! users sent (`counted`). X's rate headers: `x-rate-limit-limit`, `-remaining`, `-reset` for the
//! user's token, and `x-account-rate-limit-*` on some GETs, which take precedence when present.

use super::MAX_RESET_WAIT;
use crate::destinations::http::{Verdict, platform_message, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Refused operations named in an error, by place.
const OPERATION_SAMPLES: usize = 3;

pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        return Verdict::Done(v);
    }
    let why = describe(status, &v);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Verdict::Retry {
            after: reset_wait(headers, SystemTime::now()).or_else(|| retry_after(headers)),
            why,
        };
    }
    if status.is_server_error() {
        return Verdict::Retry {
            after: retry_after(headers),
            why,
        };
    }
    Verdict::Fail(match status {
        StatusCode::UNAUTHORIZED => format!(
            "{why}; X did not accept the request's OAuth 1.0a signature: check consumer_key and consumer_secret \
             (the app's API key and secret), access_token and access_token_secret (the user's, who must have \
             access to the ad account), and this machine's clock (X refuses timestamps far from its own)"
        ),
        StatusCode::FORBIDDEN => format!(
            "{why}; the user of access_token may not manage this ad account's audiences, or the app is not \
             allowlisted for X's Audience API (ask X for access)"
        ),
        StatusCode::NOT_FOUND => format!("{why}; check account_id and audience_id"),
        StatusCode::BAD_REQUEST => format!("{why}; X refused the request as sent"),
        _ => why,
    })
}

/// `HTTP 400 INVALID_PARAMETER: message`, the refused operations after it.
fn describe(status: StatusCode, v: &Value) -> String {
    let errors = v["errors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut why = format!("HTTP {}", status.as_u16());
    match errors.first() {
        Some(first) => why.push_str(&error_text(first)),
        None => why.push_str(": no message"),
    }
    if errors.len() > 1 {
        why.push_str(&format!(" (and {} more errors)", errors.len() - 1));
    }
    if let Some(refused) = operation_errors(v) {
        why.push_str("; ");
        why.push_str(&refused);
    }
    why
}

/// ` CODE: message` of one error object, each withheld when it could quote a value.
fn error_text(error: &Value) -> String {
    let code = error["code"]
        .as_str()
        .map(|c| format!(" {}", shown(c)))
        .unwrap_or_default();
    let message = error["message"]
        .as_str()
        .map(shown)
        .unwrap_or_else(|| "no message".to_string());
    format!("{code}: {message}")
}

/// A text of X's as it may be shown: whole, or withheld when it could quote a value.
fn shown(text: &str) -> String {
    platform_message(text).unwrap_or_else(|| "message withheld".to_string())
}

/// How many operations `operation_errors` refuses, and the first few by place.
fn operation_errors(v: &Value) -> Option<String> {
    let refused: Vec<(usize, &Value)> = v["operation_errors"]
        .as_array()?
        .iter()
        .enumerate()
        .filter_map(|(i, e)| first_error(e).map(|e| (i, e)))
        .collect();
    if refused.is_empty() {
        return None;
    }
    let samples: Vec<String> = refused
        .iter()
        .take(OPERATION_SAMPLES)
        .map(|(i, e)| format!("operation {i}{}", error_text(e)))
        .collect();
    Some(format!(
        "operation_errors: {} operations refused, such as {}",
        refused.len(),
        samples.join("; ")
    ))
}

/// An operation's first error: its entry is an array of errors, or one error, or empty.
fn first_error(entry: &Value) -> Option<&Value> {
    match entry {
        Value::Array(errors) => errors.first(),
        Value::Object(o) if !o.is_empty() => Some(entry),
        _ => None,
    }
}

/// Whether an accepted users answer counts every user sent; else what it says instead.
pub fn counted(answer: &Value, sent: u64) -> Result<(), String> {
    let data = &answer["data"];
    match (data["success_count"].as_u64(), data["total_count"].as_u64()) {
        (Some(s), Some(t)) if s == sent && t == sent => Ok(()),
        (Some(s), Some(t)) => Err(format!(
            "X counted {s} of the {sent} users sent (success_count {s}, total_count {t})"
        )),
        _ => Err(format!(
            "X's answer has no success_count and total_count for the {sent} users sent"
        )),
    }
}

/// `x-rate-limit-remaining` and `-reset` (the ad account's pair when the answer has one).
fn rate_headers(headers: &HeaderMap) -> (Option<u64>, Option<u64>) {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match number("x-account-rate-limit-remaining") {
        Some(remaining) => (Some(remaining), number("x-account-rate-limit-reset")),
        None => (
            number("x-rate-limit-remaining"),
            number("x-rate-limit-reset"),
        ),
    }
}

/// How long until the rate window resets, as the answer says (at most `MAX_RESET_WAIT`).
pub fn reset_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let reset = UNIX_EPOCH + Duration::from_secs(rate_headers(headers).1?);
    Some(
        reset
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RESET_WAIT),
    )
}

/// When the answer says the window is spent (`x-rate-limit-remaining: 0`): how long until it
/// resets.
pub fn spent_window_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    match rate_headers(headers).0 {
        Some(0) => reset_wait(headers, now),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict(status: u16, body: &str) -> Verdict<Value> {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn statuses_decide() {
        assert!(matches!(
            verdict(200, r#"{"data": {"success_count": 1, "total_count": 1}}"#),
            Verdict::Done(_)
        ));
        assert!(matches!(verdict(503, "<html>"), Verdict::Retry { .. }));
        let unauthorized = r#"{"errors": [{"code": "UNAUTHORIZED_ACCESS", "message": "This request is not properly authenticated"}]}"#;
        match verdict(401, unauthorized) {
            Verdict::Fail(m) => assert!(
                m.starts_with(
                    "HTTP 401 UNAUTHORIZED_ACCESS: This request is not properly authenticated"
                ) && m.contains("consumer_secret")
                    && m.contains("access_token_secret"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match verdict(404, "not json") {
            Verdict::Fail(m) => assert!(m.starts_with("HTTP 404: no message"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_429_waits_for_the_window_to_reset() {
        let now = SystemTime::now();
        let reset = now.duration_since(UNIX_EPOCH).unwrap().as_secs() + 30;
        let h = headers(&[
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &reset.to_string()),
        ]);
        match classify(StatusCode::TOO_MANY_REQUESTS, &h, b"{}") {
            Verdict::Retry {
                after: Some(after), ..
            } => {
                assert!(after > Duration::from_secs(28) && after <= Duration::from_secs(30))
            }
            other => panic!("{other:?}"),
        }
        let spent = spent_window_wait(&h, now).unwrap();
        assert!(spent <= Duration::from_secs(30) && spent > Duration::from_secs(29));
        let left = headers(&[("x-rate-limit-remaining", "3"), ("x-rate-limit-reset", "1")]);
        assert_eq!(spent_window_wait(&left, now), None);
        // A reset long past waits nothing; one far ahead no longer than the cap.
        let past = headers(&[("x-rate-limit-remaining", "0"), ("x-rate-limit-reset", "1")]);
        assert_eq!(spent_window_wait(&past, now), Some(Duration::ZERO));
        let far = headers(&[
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &(reset + 86_400).to_string()),
        ]);
        assert_eq!(spent_window_wait(&far, now), Some(MAX_RESET_WAIT));
        // The ad account's pair takes precedence.
        let account = headers(&[
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &reset.to_string()),
            ("x-account-rate-limit-remaining", "5"),
            ("x-account-rate-limit-reset", &reset.to_string()),
        ]);
        assert_eq!(spent_window_wait(&account, now), None);
    }

    #[test]
    fn refused_operations_are_named_by_place_with_their_values_withheld() {
        let hash = "0123456789abcdef".repeat(4);
        let body = json!({
            "errors": [{"code": "INVALID_PARAMETER", "message": "2 operations have errors"}],
            "operation_errors": [[], [{"code": "INVALID_PARAMETER", "message": format!("bad hash {hash}")}], null, {"code": "INVALID_PARAMETER", "message": "users: required"}],
        });
        match verdict(400, &body.to_string()) {
            Verdict::Fail(m) => {
                assert!(
                    m.contains("HTTP 400 INVALID_PARAMETER: 2 operations have errors")
                        && m.contains("operation_errors: 2 operations refused")
                        && m.contains("operation 1 INVALID_PARAMETER: message withheld")
                        && m.contains("operation 3 INVALID_PARAMETER: users: required")
                        && !m.contains(&hash),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_must_count_every_user_sent() {
        let answer = |s: u64, t: u64| json!({"data": {"success_count": s, "total_count": t}});
        assert_eq!(counted(&answer(2500, 2500), 2500), Ok(()));
        let short = counted(&answer(2499, 2500), 2500).unwrap_err();
        assert!(
            short.contains("2499 of the 2500") && short.contains("total_count 2500"),
            "{short}"
        );
        assert!(counted(&answer(3, 3), 4).is_err());
        assert!(counted(&json!({"data": {}}), 1).is_err());
    }
}
