//! Reading Microsoft's answers. A fault is an `ApplicationFault` with HTTP 400, 401, 403 or 500
//! (the statuses the REST SDK `msads` maps), its errors under `Errors` (`AdApiFaultDetail`) or
//! `OperationErrors` and `BatchErrors` (`ApiFaultDetail`), each with a numeric `Code`, a
//! symbolic `ErrorCode` and a `Message`, and the fault's `TrackingId`. What to do is read from
//! the codes, not the status, since the same code may come with several statuses:
//!
//! - 117 CallRateExceeded (a sliding minute) is retried after 60 seconds, or after the
//!   `Retry-After` header when there is one (Microsoft documents none; the sandbox sends its
//!   window);
//! - 0 InternalError, other 5xx and HTTP 429 are retried with backoff;
//! - everything else is permanent, with what to do for the codes a job can cause: an expired
//!   or refused token, a user without access, an unknown list, Customer Match terms not
//!   accepted.
//!
//! An answer of HTTP 200 may carry `PartialErrors`: for an Apply, items refused by their
//! `Index` (`refused_items`); an error that is about the whole call (an unknown list, the terms,
//! an action or item type) or that points at no item fails the call; a 0 InternalError among
//! them sends the whole call again (an Apply's Add, Remove and Replace are idempotent).
//!
//! Messages are shown only when they cannot hold a member's value (`platform_message`: no `@`,
//! no long run of hex digits), so an echo of the request never reaches the logs.

use super::{CALL_RATE_WAIT, codes};
use crate::destinations::http::{Verdict, platform_message, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// What an answer means; `Done` with the answer's JSON.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if call_rate_exceeded(&answer) {
        return Verdict::Retry {
            after: Some(retry_after(headers).unwrap_or(CALL_RATE_WAIT)),
            why: describe(status, &fault_errors(&answer), &answer, headers),
        };
    }
    if status.is_success() && fault_errors(&answer).is_empty() {
        let errors = partial_errors(&answer);
        if errors
            .iter()
            .any(|e| code(e) == Some(codes::INTERNAL_ERROR))
        {
            // Microsoft could not process some of it, for no reason of the request's: all again.
            return Verdict::Retry {
                after: None,
                why: describe(status, &errors, &answer, headers),
            };
        }
        let refused = whole_call_partial_error(&answer)
            .map(|e| with_advice(describe(status, &[e], &answer, headers), code(e)));
        return match refused {
            Some(why) => Verdict::Fail(why),
            None => Verdict::Done(answer),
        };
    }
    let faults = fault_errors(&answer);
    let why = describe(status, &faults, &answer, headers);
    let permanent_code = faults
        .iter()
        .filter_map(|e| code(e))
        .find(|c| permanent(*c));
    let transient = status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || faults
            .iter()
            .any(|e| code(e) == Some(codes::INTERNAL_ERROR));
    match permanent_code {
        None if transient => Verdict::Retry {
            after: retry_after(headers),
            why,
        },
        None if status == StatusCode::UNAUTHORIZED => Verdict::Fail(format!(
            "{why}; the access token is missing, invalid or expired: refresh it (scope msads.manage)"
        )),
        c => Verdict::Fail(with_advice(why, c)),
    }
}

/// Error 117 among the fault's errors or the partial errors.
fn call_rate_exceeded(answer: &Value) -> bool {
    fault_errors(answer)
        .into_iter()
        .chain(partial_errors(answer))
        .any(|e| code(e) == Some(codes::CALL_RATE_EXCEEDED))
}

/// What a create (`Audiences`, AddAudiences) came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// The new list's id (or, from `find_or_create`'s look first, the list found by its name).
    Id(String),
    /// 4853 DuplicateAudienceName, with what Microsoft said: another run, or this run's earlier
    /// try whose answer was lost, took the name meanwhile, and a look for it by name is next; if
    /// that finds no customer list, the name is held by something the job cannot use.
    NameTaken(String),
}

/// What the answer to `Audiences` (AddAudiences) created: the new list's id, or that its name
/// is taken (`Created::NameTaken`, which the sink settles by looking the name up once more).
pub fn classify_created(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Created> {
    let answer = match classify(status, headers, body) {
        Verdict::Done(answer) => answer,
        Verdict::Retry { after, why } => return Verdict::Retry { after, why },
        Verdict::Fail(why) => return Verdict::Fail(why),
    };
    if let Some(id) = long_text(&answer["AudienceIds"][0]) {
        return Verdict::Done(Created::Id(id));
    }
    let errors = partial_errors(&answer);
    let why = describe(status, &errors, &answer, headers);
    if errors
        .iter()
        .any(|e| code(e) == Some(codes::DUPLICATE_AUDIENCE_NAME))
    {
        Verdict::Done(Created::NameTaken(why))
    } else if errors.is_empty() {
        Verdict::Retry {
            after: None,
            why: "the answer carries no audience id".into(),
        }
    } else {
        Verdict::Fail(why)
    }
}

/// The indexes of the items an Apply's `PartialErrors` refused (not retried: the same items
/// would be refused again). A 0 InternalError never reaches here: `classify` retries the call.
pub fn refused_items(answer: &Value) -> Vec<usize> {
    partial_errors(answer)
        .iter()
        .filter_map(|e| index(e))
        .collect()
}

/// A JSON long as text: Microsoft's REST answers carry longs as strings, or as numbers.
pub fn long_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn fault_errors(answer: &Value) -> Vec<&Value> {
    ["Errors", "OperationErrors", "BatchErrors"]
        .iter()
        .flat_map(|k| answer[*k].as_array().into_iter().flatten())
        .filter(|e| e.is_object())
        .collect()
}

fn partial_errors(answer: &Value) -> Vec<&Value> {
    answer["PartialErrors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e.is_object())
        .collect()
}

/// A partial error that is about the whole call, or points at no item: the call failed.
fn whole_call_partial_error(answer: &Value) -> Option<&Value> {
    partial_errors(answer)
        .into_iter()
        .find(|e| index(e).is_none() || code(e).is_some_and(about_the_whole_call))
}

fn about_the_whole_call(code: i64) -> bool {
    matches!(
        code,
        codes::INVALID_CREDENTIALS
            | codes::USER_IS_NOT_AUTHORIZED
            | codes::AUTHENTICATION_TOKEN_EXPIRED
            | codes::NOT_AUTHORIZED
            | codes::INVALID_CUSTOMER_LIST_ID
            | codes::INVALID_CUSTOMER_LIST_ACTION_TYPE
            | codes::CUSTOMER_LIST_ITEM_SUB_TYPE_NOT_SUPPORTED
            | codes::CUSTOMER_LIST_TERMS_NOT_ACCEPTED
    )
}

/// Codes no retry can fix, even when they come with HTTP 500 (as SOAP-era faults do).
fn permanent(code: i64) -> bool {
    about_the_whole_call(code)
        || matches!(
            code,
            codes::NULL_REQUEST
                | codes::REQUEST_MISSING_HEADERS
                | codes::BATCH_LIMIT_EXCEEDED
                | 1000..=1999
                | 4800..=4899
                | 8004..=8006
        )
}

fn code(e: &Value) -> Option<i64> {
    match &e["Code"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn index(e: &Value) -> Option<usize> {
    match &e["Index"] {
        Value::Number(n) => n.as_u64().map(|i| i as usize),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `HTTP 400: 8003 CustomerListTermsAndConditionsNotAccepted (message); TrackingId ...`.
fn describe(status: StatusCode, errors: &[&Value], answer: &Value, headers: &HeaderMap) -> String {
    let listed: Vec<String> = errors
        .iter()
        .take(3)
        .map(|e| {
            let number = code(e).map(|c| c.to_string()).unwrap_or_default();
            let symbol = e["ErrorCode"]
                .as_str()
                .filter(|s| s.len() <= 80 && s.bytes().all(|b| b.is_ascii_alphanumeric()));
            let message = e["Message"].as_str().map(|m| match platform_message(m) {
                Some(m) => format!(" ({m})"),
                None => " (message withheld)".to_string(),
            });
            format!(
                "{number} {}{}",
                symbol.unwrap_or(""),
                message.unwrap_or_default()
            )
            .trim()
            .to_string()
        })
        .collect();
    let tracking = answer["TrackingId"]
        .as_str()
        .or_else(|| headers.get("trackingid").and_then(|v| v.to_str().ok()))
        .filter(|t| t.len() <= 64)
        .map(|t| format!("; TrackingId {t}"))
        .unwrap_or_default();
    match listed.is_empty() {
        true => format!("HTTP {}: no error details{tracking}", status.as_u16()),
        false => format!("HTTP {}: {}{tracking}", status.as_u16(), listed.join("; ")),
    }
}

/// What the job's owner can do about a permanent error.
fn with_advice(why: String, code: Option<i64>) -> String {
    let advice = match code {
        Some(codes::AUTHENTICATION_TOKEN_EXPIRED) => {
            "the access token expired: refresh it (scope msads.manage) and run again"
        }
        Some(codes::INVALID_CREDENTIALS) => {
            "the access token or the developer token was refused: check that both are valid and for this \
             environment (a production token fails on the sandbox, and the other way round)"
        }
        Some(codes::USER_IS_NOT_AUTHORIZED | codes::NOT_AUTHORIZED) => {
            "the token's user may not act for this customer or account: check customer_id and account_id"
        }
        Some(codes::REQUEST_MISSING_HEADERS) => {
            "a required header (DeveloperToken, CustomerId, CustomerAccountId) was missing or empty"
        }
        Some(codes::INVALID_CUSTOMER_LIST_ID | codes::INVALID_AUDIENCE_ID) => {
            "no such customer list for this customer: check audience_id, or give `audience` (a name) to have it created"
        }
        Some(codes::CUSTOMER_LIST_TERMS_NOT_ACCEPTED) => {
            "the Customer Match terms are not accepted for this customer: accept them in the Microsoft Advertising UI, \
             or set accept_customer_match_terms = true to accept them with each upload"
        }
        _ => return why,
    };
    format!("{why}; {advice}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn verdict(status: u16, body: &str) -> Verdict<Value> {
        verdict_with(status, &HeaderMap::new(), body)
    }

    fn verdict_with(status: u16, headers: &HeaderMap, body: &str) -> Verdict<Value> {
        classify(
            StatusCode::from_u16(status).unwrap(),
            headers,
            body.as_bytes(),
        )
    }

    fn fault(code: i64, symbol: &str) -> String {
        format!(
            r#"{{"TrackingId": "t-1", "Type": "AdApiFaultDetail", "Errors": [{{"Code": {code}, "ErrorCode": "{symbol}", "Message": "m"}}]}}"#
        )
    }

    #[test]
    fn call_rate_exceeded_waits_a_minute_or_what_the_answer_says() {
        for status in [400, 429, 500] {
            match verdict(status, &fault(117, "CallRateExceeded")) {
                Verdict::Retry { after, why } => {
                    assert_eq!(after, Some(Duration::from_secs(60)));
                    assert!(
                        why.contains("117 CallRateExceeded") && why.contains("t-1"),
                        "{why}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        match verdict_with(400, &headers, &fault(117, "CallRateExceeded")) {
            Verdict::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(2))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn codes_decide_and_permanent_ones_say_what_to_do() {
        assert!(matches!(
            verdict(500, &fault(0, "InternalError")),
            Verdict::Retry { .. }
        ));
        assert!(matches!(verdict(503, "<html>"), Verdict::Retry { .. }));
        let fail = |status, body: &str| match verdict(status, body) {
            Verdict::Fail(m) => m,
            other => panic!("{other:?}"),
        };
        let m = fail(401, &fault(109, "AuthenticationTokenExpired"));
        assert!(m.contains("109") && m.contains("refresh"), "{m}");
        // Auth faults are permanent whatever the status (SOAP-era faults come as HTTP 500).
        let m = fail(500, &fault(105, "InvalidCredentials"));
        assert!(m.contains("developer token"), "{m}");
        let m = fail(
            400,
            r#"{"Type": "ApiFaultDetail", "BatchErrors": [], "OperationErrors": [{"Code": 8003, "ErrorCode": "CustomerListTermsAndConditionsNotAccepted", "Message": "m"}]}"#,
        );
        assert!(
            m.contains("8003") && m.contains("accept_customer_match_terms"),
            "{m}"
        );
        let m = fail(401, "");
        assert!(m.contains("refresh"), "{m}");
    }

    #[test]
    fn partial_errors_refuse_items_or_the_whole_call() {
        let answer = r#"{"PartialErrors": [{"Code": 8004, "ErrorCode": "EmailMustBeHashed", "Index": 2, "Message": "x"}]}"#;
        match verdict(200, answer) {
            Verdict::Done(v) => assert_eq!(refused_items(&v), [2]),
            other => panic!("{other:?}"),
        }
        match verdict(
            200,
            r#"{"PartialErrors": [{"Code": 8000, "ErrorCode": "InvalidCustomerListId", "Index": 0}]}"#,
        ) {
            Verdict::Fail(m) => assert!(m.contains("audience_id"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verdict(
                200,
                r#"{"PartialErrors": [{"Code": 8004, "ErrorCode": "EmailMustBeHashed"}]}"#
            ),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            verdict(200, r#"{"PartialErrors": []}"#),
            Verdict::Done(_)
        ));
    }

    #[test]
    fn a_created_list_gives_its_id_and_a_taken_name_looks_again() {
        let created =
            |body: &str| classify_created(StatusCode::OK, &HeaderMap::new(), body.as_bytes());
        assert!(
            matches!(created(r#"{"AudienceIds": ["821"], "PartialErrors": []}"#), Verdict::Done(Created::Id(id)) if id == "821")
        );
        assert!(
            matches!(created(r#"{"AudienceIds": [821]}"#), Verdict::Done(Created::Id(id)) if id == "821")
        );
        match created(
            r#"{"AudienceIds": [null], "PartialErrors": [{"Code": 4853, "ErrorCode": "DuplicateAudienceName", "Index": 0}]}"#,
        ) {
            Verdict::Done(Created::NameTaken(why)) => {
                assert!(why.contains("4853 DuplicateAudienceName"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            created(
                r#"{"AudienceIds": [null], "PartialErrors": [{"Code": 4838, "ErrorCode": "InvalidAudienceName", "Index": 0}]}"#
            ),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn messages_that_could_hold_a_value_are_not_shown() {
        let with_message = |message: &str| {
            let body = serde_json::json!({"Errors": [{"Code": 4835, "ErrorCode": "InvalidAudienceId", "Message": message}]});
            match verdict(400, &body.to_string()) {
                Verdict::Fail(m) => m,
                other => panic!("{other:?}"),
            }
        };
        let m = with_message("Invalid CustomerList Id");
        assert!(
            m.contains("4835 InvalidAudienceId (Invalid CustomerList Id)"),
            "{m}"
        );
        for quoting in [
            "bad item a@example.com".to_string(),
            format!("item {} refused", "ab".repeat(32)),
        ] {
            let m = with_message(&quoting);
            assert!(
                m.contains("4835 InvalidAudienceId (message withheld)") && !m.contains(&quoting),
                "{m}"
            );
        }
    }

    #[test]
    fn an_internal_error_among_partial_errors_sends_the_call_again() {
        for answer in [
            r#"{"PartialErrors": [{"Code": 0, "ErrorCode": "InternalError", "Index": 3, "Message": "m"}]}"#,
            r#"{"PartialErrors": [{"Code": 8004, "ErrorCode": "EmailMustBeHashed", "Index": 1}, {"Code": "0", "ErrorCode": "InternalError", "Index": 2}]}"#,
            r#"{"PartialErrors": [{"Code": 0, "ErrorCode": "InternalError"}]}"#,
        ] {
            match verdict(200, answer) {
                Verdict::Retry { after, why } => {
                    assert_eq!(after, None);
                    assert!(why.contains("0 InternalError"), "{why}");
                }
                other => panic!("{answer}: {other:?}"),
            }
        }
    }
}
