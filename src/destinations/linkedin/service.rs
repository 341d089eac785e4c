//! Reading LinkedIn's answers. Errors are Rest.li 2.0's `{"status", "serviceErrorCode", "code",
//! "message"}` (UNCONFIRMED field set beyond `status` and `message`). Retried, as Segment's
//! connector retries them: 408, 409 (a concurrent create), 423, 429 and 5xx; LinkedIn sends no
//! `Retry-After` on a 429 (its daily and per-minute quotas come without rate headers), so the
//! backoff alone spaces the tries. Permanent: 401 (the token is invalid, expired or revoked:
//! refresh it), 403 (no `rw_dmp_segments`, or a VIEWER role), 426 (a LinkedIn-Version not
//! active), and the other 4xx. A 404 from the users call is a segment LinkedIn has not made
//! available yet only when this phase has just created it, and then for `NOT_READY_FOR` at most
//! (`classify_users`); elsewhere it is permanent.
//!
//! A BATCH_CREATE's 200 answers each element, index-aligned: `{"elements": [{"status": 201},
//! {"status": 400, "error": {…}}]}`. A refused element is counted (`Refused`), not sent again:
//! the rest of its batch was applied, and the same element would be refused the same way. An
//! element answered 408, 429 or 5xx, and an answer that does not say what became of each
//! element (not JSON, a status missing, more or fewer elements than sent), send the whole batch
//! again: adds and removes are idempotent on LinkedIn ("A 201 is returned if you add the same ID
//! again").
//!
//! LinkedIn's messages are shown only through `platform_message`: LinkedIn receives GOOGLE_AID
//! raw, and a message quoting one must not reach an error or a log.

use crate::destinations::http::{Verdict, platform_message, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::Instant;

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

/// A users call's answer: as `classify`, and on success what became of each element
/// (`Refused::read`). A 404 is a segment LinkedIn has not made available yet (it takes seconds
/// after the create) only when this phase created `segment` and `not_ready_until` has not
/// passed: tried again after at least `NOT_READY_WAIT`. Otherwise a 404 is permanent: a segment
/// given by `audience_id`, found by name or resumed from the checkpoint exists or it does not.
pub fn classify_users(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    sent: &[(&str, usize)],
    segment: &str,
    not_ready_until: Option<Instant>,
) -> Verdict<Refused> {
    if status == StatusCode::NOT_FOUND {
        let why = describe(status, body);
        return match not_ready_until {
            Some(until) if Instant::now() < until => Verdict::Retry {
                after: Some(super::NOT_READY_WAIT),
                why: format!(
                    "{why}: the segment is not ready yet (LinkedIn makes a new segment available seconds after creating it)"
                ),
            },
            Some(_) => Verdict::Fail(format!(
                "{why}; DMP segment {segment}, created by this run, was still not found {} s after its creation: \
                 check it in Campaign Manager, then run again (the run goes on with it)",
                super::NOT_READY_FOR.as_secs()
            )),
            None => Verdict::Fail(format!(
                "{why}; LinkedIn finds no DMP segment {segment} (deleted, or not visible to the token's member): \
                 check the segment in Campaign Manager, and audience_id when the job gives one"
            )),
        };
    }
    match classify(status, headers, body) {
        Verdict::Done(_) => match serde_json::from_slice::<Value>(body) {
            Ok(answer) => Refused::read(&answer, sent),
            Err(_) => Verdict::Retry {
                after: None,
                why: format!(
                    "HTTP {}: the answer is not JSON, so it does not say which elements were applied; the batch is sent again",
                    status.as_u16()
                ),
            },
        },
        Verdict::Retry { after, why } => Verdict::Retry { after, why },
        Verdict::Fail(why) => Verdict::Fail(why),
    }
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
    let message = match v["message"].as_str() {
        None => "no message".to_string(),
        Some(m) => platform_message(m).unwrap_or_else(|| "message withheld".to_string()),
    };
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
    /// Reads a BATCH_CREATE answer; `sent` describes the elements it answers, in order. `Done`
    /// with the elements refused for good (a 4xx other than 408 and 429); `Retry` when an
    /// element's status is transient (408, 429, 5xx), or the answer does not say what became of
    /// every element sent (no `elements`, another count than sent, a status missing): the whole
    /// batch goes again, which LinkedIn's idempotent adds and removes allow.
    pub fn read(answer: &Value, sent: &[(&str, usize)]) -> Verdict<Refused> {
        let retry = |why: String| Verdict::Retry { after: None, why };
        let Some(elements) = answer["elements"].as_array() else {
            return retry("the answer has no element statuses; the batch is sent again".into());
        };
        if elements.len() != sent.len() {
            return retry(format!(
                "the answer has {} element statuses for {} elements sent; the batch is sent again",
                elements.len(),
                sent.len()
            ));
        }
        let mut refused = Refused::default();
        for (i, element) in elements.iter().enumerate() {
            let Some(status) = element["status"].as_u64() else {
                return retry(format!(
                    "element {i} of the answer has no status; the batch is sent again"
                ));
            };
            match status {
                200..=299 => continue,
                408 | 429 | 500..=599 => {
                    return retry(format!(
                        "element {i} was answered {status}{}; the batch is sent again",
                        error_codes(&element["error"])
                    ));
                }
                _ => {}
            }
            refused.count += 1;
            if refused.samples.len() < SAMPLES {
                refused.samples.push(sample(element, status, sent.get(i)));
            }
        }
        Verdict::Done(refused)
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
    format!("{what}: status {status}{}", error_codes(&element["error"]))
}

/// ` INVALID_VALUE` or ` serviceErrorCode 65602` of an element's error; empty without either.
fn error_codes(error: &Value) -> String {
    error["code"]
        .as_str()
        .map(|c| format!(" {}", c.chars().take(64).collect::<String>()))
        .or_else(|| {
            error["serviceErrorCode"]
                .as_u64()
                .map(|c| format!(" serviceErrorCode {c}"))
        })
        .unwrap_or_default()
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
    }

    /// A users call's answer, for one element sent (a GOOGLE_AID) to segment 77.
    fn users(status: u16, body: &str, not_ready_until: Option<Instant>) -> Verdict<Refused> {
        classify_users(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            &[("GOOGLE_AID", 36)],
            "77",
            not_ready_until,
        )
    }

    #[test]
    fn a_404_is_not_ready_only_for_a_segment_just_created_and_only_for_a_while() {
        let body = r#"{"status": 404, "message": "Could not find DMP segment 77"}"#;
        let later = Instant::now() + std::time::Duration::from_secs(60);
        match users(404, body, Some(later)) {
            Verdict::Retry { after, why } => {
                assert_eq!(after, Some(crate::destinations::linkedin::NOT_READY_WAIT));
                assert!(why.contains("not ready"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Given by audience_id, found by name or resumed: permanent, naming the segment.
        match users(404, body, None) {
            Verdict::Fail(m) => assert!(
                m.contains("HTTP 404") && m.contains("no DMP segment 77"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        // Created by this phase, but the while is over.
        match users(404, body, Some(Instant::now())) {
            Verdict::Fail(m) => assert!(
                m.contains("DMP segment 77") && m.contains("created by this run"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn element_statuses_decide_whether_the_batch_goes_again() {
        let retried = |status: u16, body: &str| {
            assert!(
                matches!(users(status, body, None), Verdict::Retry { .. }),
                "{status} {body}"
            );
        };
        // An element answered as transient: the whole batch again (adds are idempotent).
        for transient in [408, 429, 500, 503] {
            retried(
                200,
                &format!(r#"{{"elements": [{{"status": {transient}}}]}}"#),
            );
        }
        // An answer that does not say what became of every element.
        retried(200, "");
        retried(200, "<html>not json</html>");
        retried(200, "{}");
        retried(200, r#"{"elements": [{}]}"#);
        retried(200, r#"{"elements": [{"status": "201"}]}"#);
        retried(200, r#"{"elements": []}"#);
        retried(200, r#"{"elements": [{"status": 201}, {"status": 201}]}"#);
        // The whole call as transient.
        retried(503, "{}");
        // Every element applied, or refused for good.
        match users(200, r#"{"elements": [{"status": 201}]}"#, None) {
            Verdict::Done(r) => assert_eq!(r.count, 0),
            other => panic!("{other:?}"),
        }
        match users(200, r#"{"elements": [{"status": 400}]}"#, None) {
            Verdict::Done(r) => assert_eq!(r.count, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_that_could_quote_an_id_are_withheld() {
        let body = r#"{"status": 400, "message": "idValue 6d92078a-8246-4ba4-ae5b-76104861e7dc is not valid"}"#;
        match verdict(400, body) {
            Verdict::Fail(m) => {
                assert!(
                    m.contains("message withheld") && !m.contains("6d92078a"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        match verdict(503, r#"{"message": "owner a@example.com"}"#) {
            Verdict::Retry { why, .. } => assert!(!why.contains('@'), "{why}"),
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
        let Verdict::Done(mut refused) = Refused::read(&answer, &sent) else {
            panic!("an answer with every element's status");
        };
        assert_eq!(refused.count, 2);
        assert_eq!(
            refused.samples,
            [
                "GOOGLE_AID (36 chars, not shown): status 400 INVALID_VALUE",
                "SHA256_EMAIL (64 chars, not shown): status 422"
            ]
        );
        let Verdict::Done(none) = Refused::read(&json!({"elements": []}), &[]) else {
            panic!("nothing sent, nothing answered");
        };
        refused.merge(none);
        assert_eq!(refused.count, 2);
    }
}
