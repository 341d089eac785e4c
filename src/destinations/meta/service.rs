//! Reading the Graph API's answers: what is done, what is worth retrying (and when), what is
//! permanent. Classified by `error.code` and `error_subcode`, not by HTTP status.

use crate::destinations::http::Verdict;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::Duration;

/// Error codes the Graph API documents as transient or as rate limits.
const TRANSIENT: &[u64] = &[1, 2, 4, 17, 341, 368, 613, 80000, 80003, 80004];

pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = &v["error"];
    if status.is_success() && err.is_null() {
        return Verdict::Done(v);
    }
    let code = err["code"].as_u64();
    let subcode = err["error_subcode"].as_u64();
    let message = err["message"].as_str().unwrap_or("no message");
    let why = format!(
        "HTTP {}, error code {}{}: {message}",
        status.as_u16(),
        code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
        subcode.map(|s| format!(" subcode {s}")).unwrap_or_default()
    );
    let transient = err["is_transient"].as_bool().unwrap_or(false)
        || code.is_some_and(|c| TRANSIENT.contains(&c))
        || (code == Some(2650) && matches!(subcode, Some(1870148 | 1870145)))
        || (code.is_none()
            && (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS));
    if transient {
        Verdict::Retry {
            after: regain_access(headers),
            why,
        }
    } else {
        let hint = match code {
            Some(190 | 102) => "; the access token is invalid or expired: renew it",
            Some(200..=299) | Some(10) => {
                "; the token lacks permission (ads_management) or the terms are not accepted"
            }
            _ => "",
        };
        Verdict::Fail(format!("{why}{hint}"))
    }
}

/// The longest `estimated_time_to_regain_access` (minutes) in `X-Business-Use-Case-Usage`.
pub fn regain_access(headers: &HeaderMap) -> Option<Duration> {
    let usage: Value =
        serde_json::from_str(headers.get("x-business-use-case-usage")?.to_str().ok()?).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(|entries| entries.as_array())
        .flatten()
        .filter_map(|e| e["estimated_time_to_regain_access"].as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60))
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
    fn classification_follows_the_error_codes() {
        assert!(matches!(
            verdict(200, r#"{"num_received": 3}"#),
            Verdict::Done(_)
        ));
        assert!(matches!(
            verdict(500, r#"{"error": {"code": 2, "message": "x"}}"#),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(
                400,
                r#"{"error": {"code": 80003, "error_subcode": 2446079}}"#
            ),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(
                400,
                r#"{"error": {"code": 2650, "error_subcode": 1870148}}"#
            ),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(
                400,
                r#"{"error": {"code": 2650, "error_subcode": 1870159}}"#
            ),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            verdict(400, r#"{"error": {"code": 100, "message": "bad"}}"#),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            verdict(502, "<html>bad gateway</html>"),
            Verdict::Retry { .. }
        ));
        match verdict(400, r#"{"error": {"code": 190}}"#) {
            Verdict::Fail(m) => assert!(m.contains("renew")),
            _ => panic!(),
        }
    }

    #[test]
    fn usage_header_gives_the_wait() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-business-use-case-usage",
            r#"{"1": [{"type": "custom_audience", "call_count": 100, "estimated_time_to_regain_access": 3}]}"#.parse().unwrap(),
        );
        assert_eq!(regain_access(&h), Some(Duration::from_secs(180)));
    }
}
