//! Reading the UID2 operator's and TTD's answers (platforms-more.md §B2, §B3).
//!
//! The operator: HTTP 200 carries the sealed answer `{"status": "success", "body": {...}}`,
//! each list index-aligned with the request's, an entry `{"u", "p", "r"}` for a mapped
//! identifier (current UID2, previous or null, refresh time) or `{"e": "optout" | "invalid
//! identifier"}`. Other statuses are plain JSON `{"status", "message"}`: 400 `client_error`
//! (a bad envelope: the client secret; the clock) and 401 `unauthorized` (the API key) are
//! permanent, 408, 429 and 5xx are retried (as ttd-data's UID2 wrapper retries them). The
//! docs give `r` in milliseconds and both official SDKs read it as seconds: both are read.
//!
//! TTD: HTTP 200 is `{}` or `{"FailedLines": [{ItemNumber, DataNumber?, ErrorCode, Message}]}`
//! (ItemNumber 1-based, a number or a numeric string). 429 (with `Retry-After`) and 5xx are
//! retried, as ttd-data's SDK does; 400, 401, 403 and 413 are permanent. Messages shown are
//! cut short and any run that could be an id (a UID2, a hash) is masked.

use super::envelope::{self, ClientSecret};
use crate::destinations::http::{Verdict, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

/// The longest part of a platform message that is shown.
const MAX_MESSAGE_CHARS: usize = 200;
/// A refresh time above this is in milliseconds (1e11 seconds is the year 5138).
const MILLISECONDS_FROM: i64 = 100_000_000_000;

/// What the operator said of one identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    Mapped {
        current: String,
        /// The UID2 before the last refresh, for 90 days after it.
        previous: Option<String>,
        /// When the UID2 may change, in seconds since the epoch.
        refresh_from: Option<i64>,
    },
    OptedOut,
    Invalid,
    /// A reason the API does not document (shown cut short).
    Unmapped(String),
}

/// Reads the operator's answer to a sealed request whose nonce is `nonce`, with `emails` and
/// `phones` entries expected.
pub fn classify_map(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    secret: &ClientSecret,
    nonce: &[u8; envelope::NONCE_BYTES],
    expected: (usize, usize),
) -> Verdict<(Vec<Mapping>, Vec<Mapping>)> {
    if status == StatusCode::OK {
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let sealed = envelope::answer_bytes(content_type, body);
        return match envelope::open_answer(secret, &sealed, nonce) {
            Ok(json) => match read_map_answer(&json, expected) {
                Ok(lists) => Verdict::Done(lists),
                Err(why) => Verdict::Fail(format!("the UID2 operator's answer: {why}")),
            },
            Err(why) => Verdict::Fail(format!(
                "the UID2 operator's answer: {why}; check uid2_base_url and uid2_client_secret"
            )),
        };
    }
    let why = describe_operator(status, body);
    if matches!(status.as_u16(), 408 | 429) || status.is_server_error() {
        return Verdict::Retry {
            after: retry_after(headers),
            why,
        };
    }
    Verdict::Fail(match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
            "{why}; the UID2 operator refused the API key (uid2_api_key): check that it is the key of this \
             environment (integration and production keys differ) and has the MAPPER role"
        ),
        StatusCode::BAD_REQUEST if why.contains("ClientSecret") || why.contains("decrypt") => {
            format!(
                "{why}; the request did not decrypt with the operator's copy of the client secret: check \
             uid2_client_secret (the Base64 secret issued with uid2_api_key)"
            )
        }
        StatusCode::BAD_REQUEST if why.contains("timestamp") => format!(
            "{why}; the operator refuses requests sealed more than a minute from its clock: check this machine's clock"
        ),
        _ => why,
    })
}

/// `HTTP 400 client_error: message`, the message masked.
fn describe_operator(status: StatusCode, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let state = v["status"]
        .as_str()
        .map(|s| format!(" {}", masked(s)))
        .unwrap_or_default();
    let message = v["message"]
        .as_str()
        .map(|m| format!(": {}", masked(m)))
        .unwrap_or_default();
    format!("HTTP {}{state}{message}", status.as_u16())
}

#[derive(Deserialize)]
struct MapAnswer {
    status: String,
    #[serde(default)]
    body: MapBody,
}

#[derive(Default, Deserialize)]
struct MapBody {
    #[serde(default)]
    email_hash: Option<Vec<Value>>,
    #[serde(default)]
    phone_hash: Option<Vec<Value>>,
}

/// The answer's `email_hash` and `phone_hash` lists, each as long as the request's.
pub fn read_map_answer(
    json: &[u8],
    (emails, phones): (usize, usize),
) -> Result<(Vec<Mapping>, Vec<Mapping>), String> {
    let answer: MapAnswer = serde_json::from_slice(json)
        .map_err(|_| "not the JSON of an identity-map answer".to_string())?;
    if answer.status != "success" {
        return Err(format!("status {}", masked(&answer.status)));
    }
    let list = |entries: Option<Vec<Value>>, expected: usize, name: &str| {
        let entries = entries.unwrap_or_default();
        if entries.len() != expected {
            return Err(format!(
                "{} {name} entries for {expected} sent",
                entries.len()
            ));
        }
        entries.iter().map(mapping).collect::<Result<Vec<_>, _>>()
    };
    Ok((
        list(answer.body.email_hash, emails, "email_hash")?,
        list(answer.body.phone_hash, phones, "phone_hash")?,
    ))
}

/// One entry of an identity-map list.
fn mapping(entry: &Value) -> Result<Mapping, String> {
    if let Some(current) = entry["u"].as_str() {
        return Ok(Mapping::Mapped {
            current: current.to_string(),
            previous: entry["p"].as_str().map(str::to_string),
            refresh_from: entry["r"].as_i64().map(refresh_seconds),
        });
    }
    match entry["e"].as_str() {
        Some("optout") => Ok(Mapping::OptedOut),
        Some("invalid identifier") => Ok(Mapping::Invalid),
        Some(other) => Ok(Mapping::Unmapped(masked(other))),
        None => Err("an entry with neither `u` nor `e`".into()),
    }
}

/// A refresh time in seconds, given in seconds (as the SDKs read it) or milliseconds (as the
/// docs write it).
pub fn refresh_seconds(r: i64) -> i64 {
    if r >= MILLISECONDS_FROM { r / 1000 } else { r }
}

/// A line of TTD's `FailedLines`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FailedLine {
    #[serde(rename = "ItemNumber")]
    pub item_number: Value,
    #[serde(rename = "DataNumber")]
    pub data_number: Value,
    #[serde(rename = "ErrorCode")]
    pub error_code: Value,
    #[serde(rename = "Message")]
    pub message: Option<String>,
}

impl FailedLine {
    /// The 1-based item it is about, if it says.
    pub fn item(&self) -> Option<usize> {
        match &self.item_number {
            Value::Number(n) => n.as_u64().map(|n| n as usize),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Its error code's name (`Uid2Error`), or `Unknown`.
    pub fn code(&self) -> String {
        match &self.error_code {
            Value::String(s) => masked(s),
            Value::Number(n) => n.to_string(),
            _ => "Unknown".to_string(),
        }
    }

    /// Whether the line is about the request as a whole (the advertiser, the segment's name, the
    /// TTL): every item of every batch would be refused, so the run stops. What it says to do.
    pub fn about_the_request(&self) -> Option<&'static str> {
        Some(match self.code().as_str() {
            "InvalidDataOwnerId" => {
                "advertiser_id is not an advertiser the auth_token may send data for: check both"
            }
            "DataNameTooLong" => {
                "the segment's name (audience) is longer than TTD takes: shorten it"
            }
            "InvalidTtlInMinutes" => "TTD does not take this ttl_days: lower it",
            "TargetingDataCreationLimitExceeded" | "TargetingDataCountLimitExceeded" => {
                "the advertiser has as many segments as TTD allows: retire unused ones or ask TTD"
            }
            "TenantRestrictionsExternalData" | "TargetingDataDisabled" => {
                "TTD does not take first-party data for this advertiser: ask your TTD account manager"
            }
            _ => return None,
        })
    }

    /// The line for a report: code, item, the id sent by its length only, the message masked.
    pub fn sample(&self, sent: Option<&str>) -> String {
        let item = self
            .item()
            .map(|n| format!(" at item {n}"))
            .unwrap_or_default();
        let id = sent
            .map(|id| format!(" {}", crate::destinations::http::mask(id)))
            .unwrap_or_default();
        let message = self
            .message
            .as_deref()
            .map(|m| format!(": {}", masked(m)))
            .unwrap_or_default();
        format!("{}{item}{id}{message}", self.code())
    }
}

/// Reads TTD's answer to a data request: its failed lines.
pub fn classify_data(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Verdict<Vec<FailedLine>> {
    if status.is_success() {
        return match failed_lines(body) {
            Some(lines) => Verdict::Done(lines),
            None => Verdict::Retry {
                after: None,
                why: format!(
                    "HTTP {} with an answer that is not TTD's JSON",
                    status.as_u16()
                ),
            },
        };
    }
    let why = describe_data(status, body);
    if matches!(status.as_u16(), 408 | 429) || status.is_server_error() {
        return Verdict::Retry {
            after: retry_after(headers),
            why,
        };
    }
    Verdict::Fail(match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
            "{why}; TTD refused the TTD-Auth token (auth_token): it is missing, expired or revoked, or may not \
             send data for this advertiser_id"
        ),
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "{why}; TTD refused the request's size: lower batch.max_rows (activator keeps requests under {} bytes)",
            super::MAX_DATA_REQUEST_BYTES
        ),
        StatusCode::BAD_REQUEST => format!("{why}; TTD refused the request as sent"),
        _ => why,
    })
}

/// The failed lines of a 200's body (`{}`, an empty body, or `{"FailedLines": [...]}`);
/// `None` if it is not TTD's JSON.
fn failed_lines(body: &[u8]) -> Option<Vec<FailedLine>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(vec![]);
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    match v.get("FailedLines") {
        None | Some(Value::Null) => v.is_object().then(Vec::new),
        Some(lines) => serde_json::from_value(lines.clone()).ok(),
    }
}

/// `HTTP 400: InvalidParameterFormat: message; ...`, masked, for an answer TTD refused.
fn describe_data(status: StatusCode, body: &[u8]) -> String {
    let lines = failed_lines(body).unwrap_or_default();
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut said: Vec<String> = lines.iter().take(3).map(|l| l.sample(None)).collect();
    for key in ["Message", "message"] {
        if let Some(m) = v[key].as_str() {
            said.push(masked(m));
        }
    }
    match said.is_empty() {
        true => format!("HTTP {}", status.as_u16()),
        false => format!("HTTP {}: {}", status.as_u16(), said.join("; ")),
    }
}

/// A platform message fit for a log: withheld if it has an `@` (an e-mail), every run of 16 or
/// more Base64 or hex characters with a digit or `+/=` in it (a UID2, a hash, a phone) masked;
/// the whole text is read, then what is shown is cut at `MAX_MESSAGE_CHARS`. Words such as
/// `ItemDeserializationError` have no digit and are shown.
pub fn masked(message: &str) -> String {
    if message.contains('@') {
        return "(message withheld: it could quote an e-mail)".to_string();
    }
    let id_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_');
    let could_be_a_value = |run: &str| {
        run.chars().count() >= 16
            && run
                .chars()
                .any(|c| c.is_ascii_digit() || matches!(c, '+' | '/' | '='))
    };
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        match could_be_a_value(run) {
            true => out.push_str("(id, not shown)"),
            false => out.push_str(run),
        }
        run.clear();
    };
    for c in message.chars() {
        if id_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(status: u16, body: &str) -> Verdict<Vec<FailedLine>> {
        classify_data(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn map_answers_are_index_aligned_and_refresh_times_read_in_either_unit() {
        let answer = json!({"status": "success", "body": {
            "email_hash": [
                {"u": "AdvIvSiaum0P5s3X/7X8h8sz+OhF2IG8DNbEnkWSbYM=", "p": null, "r": 1735689600000i64},
                {"e": "optout"},
            ],
            "phone_hash": [
                {"u": "IbW4n6LIvtDj/8fCESlU0QG9K/fH63UdcTkJpAG8fIQ=", "p": "EObwtHBUqDNZR33LNSMdtt5cafsYFuGmuY4ZLenlue4=", "r": 1735689600},
                {"e": "invalid identifier"},
                {"e": "something new"},
            ],
            "email": [], "phone": []
        }});
        let json = serde_json::to_vec(&answer).unwrap();
        let (emails, phones) = read_map_answer(&json, (2, 3)).unwrap();
        assert_eq!(
            emails[0],
            Mapping::Mapped {
                current: "AdvIvSiaum0P5s3X/7X8h8sz+OhF2IG8DNbEnkWSbYM=".into(),
                previous: None,
                refresh_from: Some(1_735_689_600),
            }
        );
        assert_eq!(emails[1], Mapping::OptedOut);
        assert!(matches!(
            &phones[0],
            Mapping::Mapped {
                previous: Some(_),
                refresh_from: Some(1_735_689_600),
                ..
            }
        ));
        assert_eq!(phones[1], Mapping::Invalid);
        assert_eq!(phones[2], Mapping::Unmapped("something new".into()));
        assert!(
            read_map_answer(&json, (3, 3))
                .unwrap_err()
                .contains("2 email_hash entries for 3")
        );
        let refused = serde_json::to_vec(&json!({"status": "client_error", "body": {}})).unwrap();
        assert!(read_map_answer(&refused, (0, 0)).is_err());
    }

    #[test]
    fn operator_statuses_decide_and_name_the_key_to_check() {
        let secret = ClientSecret::from_bytes([1u8; 32]);
        let classify = |status: u16, body: &str| {
            classify_map(
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                body.as_bytes(),
                &secret,
                &[0u8; 8],
                (0, 0),
            )
        };
        match classify(
            401,
            r#"{"status": "unauthorized", "message": "Invalid API key"}"#,
        ) {
            Verdict::Fail(m) => assert!(
                m.contains("HTTP 401 unauthorized") && m.contains("uid2_api_key"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match classify(
            400,
            r#"{"status": "client_error", "message": "Invalid body: Check encryption key (ClientSecret)"}"#,
        ) {
            Verdict::Fail(m) => assert!(m.contains("uid2_client_secret"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(429, "{}"), Verdict::Retry { .. }));
        assert!(matches!(classify(503, "<html>"), Verdict::Retry { .. }));
        assert!(matches!(classify(408, ""), Verdict::Retry { .. }));
        match classify(200, "not sealed") {
            Verdict::Fail(m) => assert!(m.contains("does not decrypt"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_lines_come_inside_a_200_and_refusals_say_what_to_check() {
        match data(200, "{}") {
            Verdict::Done(lines) => assert!(lines.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(data(200, ""), Verdict::Done(ref l) if l.is_empty()));
        let body = r#"{"FailedLines": [
            {"ItemNumber": "2", "DataNumber": "1", "ErrorCode": "Uid2Error", "Message": "Invalid UID2 AdvIvSiaum0P5s3X/7X8h8sz+OhF2IG8DNbEnkWSbYM="},
            {"ItemNumber": 3, "ErrorCode": "DataNameTooLong"}
        ]}"#;
        let Verdict::Done(lines) = data(200, body) else {
            panic!("a 200")
        };
        assert_eq!((lines[0].item(), lines[1].item()), (Some(2), Some(3)));
        let sample = lines[0].sample(Some("AdvIvSiaum0P5s3X/7X8h8sz+OhF2IG8DNbEnkWSbYM="));
        assert_eq!(
            sample,
            "Uid2Error at item 2 (44 chars, not shown): Invalid UID2 (id, not shown)"
        );
        assert!(lines[0].about_the_request().is_none());
        assert!(lines[1].about_the_request().unwrap().contains("audience"));
        assert!(matches!(data(429, "{}"), Verdict::Retry { .. }));
        assert!(matches!(data(500, ""), Verdict::Retry { .. }));
        assert!(matches!(data(200, "<html>"), Verdict::Retry { .. }));
        match data(401, r#"{"Message": "Unauthorized"}"#) {
            Verdict::Fail(m) => assert!(
                m.contains("HTTP 401: Unauthorized") && m.contains("auth_token"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match data(
            400,
            r#"{"FailedLines": [{"ErrorCode": "ItemDeserializationError", "Message": "bad"}]}"#,
        ) {
            Verdict::Fail(m) => assert!(m.contains("ItemDeserializationError: bad"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_lose_their_ids_and_their_tail() {
        assert_eq!(
            masked("Invalid body: Version mismatch."),
            "Invalid body: Version mismatch."
        );
        assert_eq!(
            masked("bad id 0123456789abcdef0123 at 3"),
            "bad id (id, not shown) at 3"
        );
        assert_eq!(
            masked("ItemDeserializationError in TargetingDataCreationLimitExceeded"),
            "ItemDeserializationError in TargetingDataCreationLimitExceeded"
        );
        assert!(masked("not mapped: a.b@example.com").contains("withheld"));
        // A value across the cut is masked whole.
        let long = format!(
            "{} AdvIvSiaum0P5s3X/7X8h8sz+OhF2IG8DNbEnkWSbYM=",
            "x ".repeat(95)
        );
        assert!(!masked(&long).contains("AdvIv"), "{}", masked(&long));
        assert_eq!(
            masked(&"x ".repeat(150)).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }
}
