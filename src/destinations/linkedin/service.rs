//! Reading LinkedIn's answers. Errors are Rest.li 2.0's `{"status", "serviceErrorCode", "code",
//! "message"}` (UNCONFIRMED field set beyond `status` and `message`). Retried, as Segment's
//! connector retries them: 408, 409 (a concurrent create), 423, 429 and 5xx; LinkedIn sends no
//! `Retry-After` on a 429 (its daily and per-minute quotas come without rate headers), so the
//! backoff alone spaces the tries. Permanent: 401 (the token is invalid, expired or revoked:
//! refresh it), 403 (no `rw_dmp_segments`, or a VIEWER role), 426 (a LinkedIn-Version not
//! active), and the other 4xx. A 404 from the users call is a segment LinkedIn has not made
//! available yet (`classify_users`); elsewhere it is permanent.
//!
//! A BATCH_CREATE's 200 answers each element, index-aligned: `{"elements": [{"status": 201},
//! {"status": 400, "error": {…}}]}`. A refused element is counted (`Refused`), not sent again:
//! the rest of its batch was applied, and the same element would be refused the same way.

use crate::destinations::http::{Verdict, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Refused elements' samples kept for the report.
const SAMPLES: usize = 5;

pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    if status.is_success() {
        return Verdict::Done(serde_json::from_slice(body).unwrap_or(Value::Null));
    }
    let why = describe(status, body);
    match status.as_u16() {
        408 | 409 | 423 | 429 | 500..=599 => Verdict::Retry {
            after: retry_after(headers),
            why,
        },
        401 => Verdict::Fail(format!(
            "{why}; the access token is invalid, expired or revoked: refresh it (LinkedIn access tokens last 60 days) and update the secret"
        )),
        403 => Verdict::Fail(format!(
            "{why}; the token's member needs the rw_dmp_segments permission (LinkedIn's Audiences program) and a role other than VIEWER on the ad account"
        )),
        426 => Verdict::Fail(format!(
            "{why}; this LinkedIn-Version is not active: set api_version to a current month (YYYYMM)"
        )),
        _ => Verdict::Fail(why),
    }
}

/// A users call's answer: as `classify`, but a 404 is a segment LinkedIn has not made available
/// yet (it takes seconds after the create), tried again after at least `NOT_READY_WAIT`.
pub fn classify_users(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    if status == StatusCode::NOT_FOUND {
        return Verdict::Retry {
            after: Some(super::NOT_READY_WAIT),
            why: format!(
                "{}: the segment is not ready yet (LinkedIn makes a new segment available seconds after creating it)",
                describe(status, body)
            ),
        };
    }
    classify(status, headers, body)
}

/// `HTTP 401 (serviceErrorCode 65602, EXPIRED_ACCESS_TOKEN): The token used in the request has
/// expired`: the status and LinkedIn's codes and message, never the whole answer.
fn describe(status: StatusCode, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut codes = vec![];
    if let Some(c) = v["serviceErrorCode"].as_u64() {
        codes.push(format!("serviceErrorCode {c}"));
    }
    if let Some(c) = v["code"].as_str() {
        codes.push(c.chars().take(64).collect());
    }
    let codes = match codes.is_empty() {
        true => String::new(),
        false => format!(" ({})", codes.join(", ")),
    };
    let message: String = v["message"]
        .as_str()
        .unwrap_or("no message")
        .chars()
        .take(300)
        .collect();
    format!("HTTP {}{codes}: {message}", status.as_u16())
}

/// Elements LinkedIn refused in BATCH_CREATE answers, and a few samples: the element's first
/// user ID by its type and length only, and the element's status and codes.
#[derive(Debug, Default)]
pub struct Refused {
    pub count: u64,
    pub samples: Vec<String>,
}

impl Refused {
    /// Takes in a BATCH_CREATE answer; `sent` describes the elements it answers, in order.
    pub fn read(answer: &Value, sent: &[(&str, usize)]) -> Refused {
        let mut refused = Refused::default();
        let statuses = answer["elements"].as_array().map(Vec::as_slice);
        for (i, element) in statuses.unwrap_or_default().iter().enumerate() {
            let status = element["status"].as_u64().unwrap_or(200);
            if (200..300).contains(&status) {
                continue;
            }
            refused.count += 1;
            if refused.samples.len() < SAMPLES {
                refused.samples.push(sample(element, status, sent.get(i)));
            }
        }
        refused
    }

    pub fn merge(&mut self, other: Refused) {
        self.count += other.count;
        let room = SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }
}

/// `SHA256_EMAIL (64 chars, not shown): status 400 INVALID_VALUE`. The element's error message
/// is left out: it may quote the value.
fn sample(element: &Value, status: u64, sent: Option<&(&str, usize)>) -> String {
    let what = match sent {
        Some((id_type, len)) => format!("{id_type} ({len} chars, not shown)"),
        None => "an element".to_string(),
    };
    let error = &element["error"];
    let code = error["code"]
        .as_str()
        .map(|c| format!(" {}", c.chars().take(64).collect::<String>()))
        .or_else(|| {
            error["serviceErrorCode"]
                .as_u64()
                .map(|c| format!(" serviceErrorCode {c}"))
        })
        .unwrap_or_default();
    format!("{what}: status {status}{code}")
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

    #[test]
    fn statuses_decide() {
        assert!(matches!(verdict(201, ""), Verdict::Done(Value::Null)));
        assert!(matches!(
            verdict(200, r#"{"elements": [{"status": 201}]}"#),
            Verdict::Done(_)
        ));
        for retried in [408, 409, 423, 429, 500, 503, 504] {
            assert!(
                matches!(verdict(retried, "{}"), Verdict::Retry { after: None, .. }),
                "{retried}"
            );
        }
        match verdict(
            401,
            r#"{"status": 401, "serviceErrorCode": 65602, "code": "EXPIRED_ACCESS_TOKEN", "message": "The token used in the request has expired"}"#,
        ) {
            Verdict::Fail(m) => assert!(
                m.contains("HTTP 401")
                    && m.contains("65602")
                    && m.contains("has expired")
                    && m.contains("refresh"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(verdict(404, "{}"), Verdict::Fail(_)));
        match verdict(426, r#"{"code": "NONEXISTENT_VERSION"}"#) {
            Verdict::Fail(m) => assert!(m.contains("api_version"), "{m}"),
            other => panic!("{other:?}"),
        }
        match classify_users(StatusCode::NOT_FOUND, &HeaderMap::new(), b"{}") {
            Verdict::Retry { after, why } => {
                assert_eq!(after, Some(crate::destinations::linkedin::NOT_READY_WAIT));
                assert!(why.contains("not ready"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refused_elements_are_counted_with_masked_samples() {
        let answer = json!({"elements": [
            {"status": 201},
            {"status": 400, "error": {"code": "INVALID_VALUE", "message": "bad value abc@example.com"}},
            {"status": 422},
        ]});
        let sent = [
            ("SHA256_EMAIL", 64),
            ("GOOGLE_AID", 36),
            ("SHA256_EMAIL", 64),
        ];
        let mut refused = Refused::read(&answer, &sent);
        assert_eq!(refused.count, 2);
        assert_eq!(
            refused.samples,
            [
                "GOOGLE_AID (36 chars, not shown): status 400 INVALID_VALUE",
                "SHA256_EMAIL (64 chars, not shown): status 422"
            ]
        );
        refused.merge(Refused::read(&json!({}), &[]));
        assert_eq!(
            refused.count, 2,
            "an answer without statuses refuses nothing"
        );
    }
}
