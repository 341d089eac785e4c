//! Google Data Manager API emulator: user lists and audience members (shared/spec/platforms.md
//! §2.B). Proto3 JSON mapping: lowerCamelCase fields, enums as names or numbers; errors as
//! `{"error": {code, message, status, details}}`; HTTP 429 RESOURCE_EXHAUSTED with the quota
//! name past the per-minute request budget.

// Checks answer with the platform's error `Response`; a handler returns it as it is.
#![allow(clippy::result_large_err)]

use super::faults::Fault;
use super::state::{MemberBatch, packed_hex, packed_key, push_member_value, push_packed_digest};
use super::{AppState, Cell};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod fast;

pub const MAX_MEMBERS: usize = 10_000;
pub const MAX_IDENTIFIERS: usize = 10;
pub const MAX_DESTINATIONS: usize = 10;

/// Requests per rolling minute (Google's per-project quota); `None` turns throttling off.
#[derive(Clone, Debug, Default)]
pub struct GoogleLimits {
    pub requests_per_minute: Option<u64>,
}

/// What an ingest or removal request did, kept under its request id for
/// `requestStatus:retrieve`: (destination list ids, record count, identifier count, removal).
type RequestRecord = (Vec<String>, u64, u64, bool);

#[derive(Default)]
pub struct GoogleState {
    pub limits: Mutex<GoogleLimits>,
    calls: Mutex<VecDeque<Instant>>,
    requests: Mutex<HashMap<String, RequestRecord>>,
    next_request: Mutex<u64>,
}

fn error(status: StatusCode, name: &str, message: &str, details: Vec<Value>) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": status.as_u16(), "message": message, "status": name, "details": details}})),
    )
        .into_response()
}

fn invalid(field: &str, description: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        &format!("Request contains an invalid argument: {field}: {description}"),
        vec![json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}],
        })],
    )
}

/// An enum given as its name or its number.
fn enum_name(v: &Value, names: &[&str]) -> Option<String> {
    match v {
        Value::String(s) => names.contains(&s.as_str()).then(|| s.clone()),
        Value::Number(n) => n
            .as_u64()
            .and_then(|i| names.get(i as usize))
            .map(|s| s.to_string()),
        _ => None,
    }
}

const ENCODINGS: &[&str] = &["ENCODING_UNSPECIFIED", "HEX", "BASE64"];
const CONSENT: &[&str] = &[
    "CONSENT_STATUS_UNSPECIFIED",
    "CONSENT_GRANTED",
    "CONSENT_DENIED",
];
const TOS: &[&str] = &[
    "CUSTOMER_MATCH_TERMS_OF_SERVICE_STATUS_UNSPECIFIED",
    "ACCEPTED",
    "REJECTED",
];
const ACCOUNT_TYPES: &[&str] = &[
    "ACCOUNT_TYPE_UNSPECIFIED",
    "GOOGLE_ADS",
    "DISPLAY_VIDEO_PARTNER",
    "DISPLAY_VIDEO_ADVERTISER",
    "DATA_PARTNER",
];

impl GoogleState {
    fn count_call(&self) -> bool {
        let Some(budget) = self.limits.lock().unwrap().requests_per_minute else {
            return true;
        };
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap();
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            calls.pop_front();
        }
        if calls.len() as u64 >= budget {
            return false;
        }
        calls.push_back(now);
        true
    }
}

/// Checks the bearer token and faults; `Some(response)` ends the request.
async fn gate(app: &AppState, headers: &HeaderMap) -> Result<Fault, Response> {
    app.store.with(|s| s.requests += 1);
    let fault = app
        .faults
        .decide(headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()))
        .await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                vec![],
            ));
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return Err(exhausted("1s"));
        }
        _ => {}
    }
    if !app.google.count_call() {
        app.store.with(|s| s.rate_limited += 1);
        return Err(exhausted("5s"));
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.is_empty());
    if !bearer {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access token.",
            vec![],
        ));
    }
    Ok(fault)
}

fn exhausted(delay: &str) -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Ingestion mutate requests' and limit 'Ingestion mutate requests per minute per project'.",
        vec![
            json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED", "domain": "googleapis.com",
                   "metadata": {"quota_limit": "IngestionMutateRequestsPerMinutePerProject"}}),
            json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}),
        ],
    )
}

fn finish(app: &AppState, fault: Fault, response: Response) -> Response {
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

fn user_list_json(a: &super::state::Audience, account_type: &str) -> Value {
    json!({
        "name": format!("accountTypes/{account_type}/accounts/{}/userLists/{}", a.account, a.id),
        "id": a.id,
        "displayName": a.name,
        "membershipStatus": "OPEN",
        "sizeInfo": {"displayNetworkMembersCount": a.size, "searchNetworkMembersCount": a.size},
    })
}

pub async fn list_user_lists(
    State(app): State<AppState>,
    Path((account_type, account)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let lists: Vec<Value> = app
        .store
        .list()
        .into_iter()
        .filter(|a| a.platform == "google" && a.account == account)
        .map(|a| user_list_json(&a, &account_type))
        .collect();
    finish(
        &app,
        fault,
        axum::Json(json!({"userLists": lists})).into_response(),
    )
}

pub async fn create_user_list(
    State(app): State<AppState>,
    Path((account_type, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if enum_name(&Value::String(account_type.clone()), ACCOUNT_TYPES).is_none() {
        return invalid("parent", "unknown account type");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return invalid("body", "not JSON");
    };
    let Some(name) = v["displayName"].as_str().filter(|n| !n.is_empty()) else {
        return invalid("user_list.display_name", "is required");
    };
    let a = app.store.create("google", &account, name);
    finish(
        &app,
        fault,
        axum::Json(user_list_json(&a, &account_type)).into_response(),
    )
}

/// An `audienceMembers` request, read without a tree of its members: their strings borrow from
/// the body, and each member is folded into its canonical form as it is read (by `fast` where it
/// can, else by serde).
#[derive(Default, serde::Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(rename_all = "camelCase")]
struct MembersRequest {
    #[serde(default)]
    destinations: Value,
    #[serde(default)]
    audience_members: Option<Members>,
    #[serde(default)]
    encoding: Value,
    #[serde(default)]
    terms_of_service: Value,
    #[serde(default)]
    consent: Value,
    #[serde(default)]
    remove_as_of_time: Value,
}

/// The first invalid member in each encoding (`ENCODED`) and the field at fault.
type FirstInvalid = [Option<(usize, &'static str)>; 2];

/// A request's `audienceMembers`, each member turned into its canonical form as the parser reads
/// it. The request's encoding may come after its members, so each member is judged in both
/// encodings and the handler picks one verdict. (A list of the parsed members, 10,000 a request,
/// cost page faults and copies that were a quarter of the emulator's time in a large upload.)
#[derive(Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Members {
    canonical: MemberBatch,
    count: usize,
    identifiers: u64,
    /// The first member invalid in each encoding (`ENCODED`), and the field at fault.
    invalid: FirstInvalid,
    /// The first member whose consent names an unknown status, and the field.
    bad_consent: Option<(usize, &'static str)>,
}

impl Members {
    /// Folds in a member: its identifiers (`None` without `userData.userIdentifiers`) and its
    /// consent.
    fn push(&mut self, ids: Option<&Identifiers>, consent: &Value) {
        let i = self.count;
        self.count += 1;
        if self.count > MAX_MEMBERS {
            return; // the request is refused: only its size matters now
        }
        self.identifiers += ids.map_or(0, |ids| ids.count as u64);
        let mut verdict = Verdict::default();
        self.canonical.push_with(|out| {
            member(ids, &mut verdict, out);
            // Kept if valid in either encoding: a member invalid in the request's encoding
            // refuses the whole request.
            verdict.0.iter().any(Option::is_none)
        });
        for (first, fault) in self.invalid.iter_mut().zip(verdict.0) {
            if first.is_none() {
                *first = fault.map(|field| (i, field));
            }
        }
        for field in ["adUserData", "adPersonalization"] {
            let c = &consent[field];
            if self.bad_consent.is_none() && !c.is_null() && enum_name(c, CONSENT).is_none() {
                // Numbered as the request's consent is `consent[0]`.
                self.bad_consent = Some((i + 1, field));
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of audience members")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
                let mut members = Members::default();
                while seq.next_element_seed(MemberSeed(&mut members))?.is_some() {}
                Ok(members)
            }
        }
        d.deserialize_seq(MembersVisitor)
    }
}

/// Refuses a field given twice, as any proto3 JSON message does.
fn first_time<E: serde::de::Error>(seen: &mut bool, name: &'static str) -> Result<(), E> {
    match std::mem::replace(seen, true) {
        true => Err(E::duplicate_field(name)),
        false => Ok(()),
    }
}

/// Reads a member in place and folds it into `Members`. (Deserialized by value, a member was
/// copied at each level of the parser: a seventh of the emulator's time in a large upload.)
struct MemberSeed<'m>(&'m mut Members);

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum MemberField {
    UserData,
    Consent,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for MemberSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an audience member")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut ids = None;
        let mut consent = Value::Null;
        let mut seen = [false; 2];
        while let Some(field) = map.next_key::<MemberField>()? {
            match field {
                MemberField::UserData => {
                    first_time(&mut seen[0], "userData")?;
                    map.next_value_seed(UserDataSeed(&mut ids))?
                }
                MemberField::Consent => {
                    first_time(&mut seen[1], "consent")?;
                    consent = map.next_value()?
                }
                MemberField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.0.push(ids.as_ref(), &consent);
        Ok(())
    }
}

/// Reads a member's `userData` (or `null`) into its identifiers, in place.
struct UserDataSeed<'s, 'de>(&'s mut Option<Identifiers<'de>>);

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum UserDataField {
    UserIdentifiers,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for UserDataSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for UserDataSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("user data")
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(field) = map.next_key::<UserDataField>()? {
            match field {
                UserDataField::UserIdentifiers => {
                    first_time(&mut seen, "userIdentifiers")?;
                    map.next_value_seed(IdentifiersSeed(&mut *self.0))?
                }
                UserDataField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads `userIdentifiers` (or `null`), folding each identifier in as it is read.
struct IdentifiersSeed<'s, 'de>(&'s mut Option<Identifiers<'de>>);

impl<'de> DeserializeSeed<'de> for IdentifiersSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for IdentifiersSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of user identifiers")
    }
    fn visit_none<E>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ids = self.0.insert(Identifiers::default());
        while let Some(mut id) = seq.next_element::<IdentifierIn<'de>>()? {
            ids.push(&mut id);
        }
        Ok(())
    }
}

/// A member's `userIdentifiers`, folded as they are read into the member's canonical fields
/// and the verdict on them, so a member is small and needs no list (a `Vec` of identifiers per
/// member was a tenth of the emulator's time in a large upload). Identifiers are judged in the
/// order they come, as the service judges them; a later identifier of a kind replaces an
/// earlier one's values.
#[derive(Default)]
struct Identifiers<'a> {
    count: usize,
    fields: Fields<'a>,
    verdict: Verdict,
}

/// The encodings user data can come in, as a `Verdict` is indexed.
const ENCODED: [&str; 2] = ["HEX", "BASE64"];

/// The first field found invalid, by encoding (`ENCODED`); `None` where all are valid.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Verdict([Option<&'static str>; 2]);

impl Verdict {
    /// Records `field` as invalid in the encodings where it is not `ok`, unless an earlier
    /// field was.
    fn check(&mut self, ok: [bool; 2], field: &'static str) {
        for (fault, ok) in self.0.iter_mut().zip(ok) {
            if fault.is_none() && !ok {
                *fault = Some(field);
            }
        }
    }

    fn and(&mut self, other: Verdict) {
        for (fault, other) in self.0.iter_mut().zip(other.0) {
            *fault = fault.or(other);
        }
    }
}

impl<'a> Identifiers<'a> {
    /// Folds in an identifier, taking its values. (Taken by reference, where it lies: moved, a
    /// 200-byte identifier was copied at each call.)
    fn push(&mut self, id: &mut IdentifierIn<'a>) {
        self.count += 1;
        let (fields, verdict) = (&mut self.fields, &mut self.verdict);
        // The kind is decided as the service does: an e-mail first, then a phone number.
        if let Some(email) = id.email_address.take() {
            write_email(email, fields, verdict);
        } else if let Some(phone) = id.phone_number.take() {
            write_phone(phone, fields, verdict);
        } else if let Some(address) = &mut id.address {
            write_address(address, fields, verdict);
        } else {
            verdict.check([false; 2], "user_identifiers");
        }
    }
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentifierIn<'a> {
    #[serde(borrow, default)]
    email_address: Option<Cell<'a>>,
    #[serde(borrow, default)]
    phone_number: Option<Cell<'a>>,
    #[serde(borrow, default)]
    address: Option<AddressIn<'a>>,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressIn<'a> {
    #[serde(borrow, default)]
    given_name: Option<Cell<'a>>,
    #[serde(borrow, default)]
    family_name: Option<Cell<'a>>,
    #[serde(borrow, default)]
    region_code: Option<Cell<'a>>,
    #[serde(borrow, default)]
    postal_code: Option<Cell<'a>>,
}

/// The fields of a canonical member, in the order `serde_json` prints a `BTreeMap`'s keys.
const CANONICAL_FIELDS: [&str; 6] = [
    "emailAddress",
    "familyName",
    "givenName",
    "phoneNumber",
    "postalCode",
    "regionCode",
];

/// `CANONICAL_FIELDS` as members keep them (`packed_key`).
static CANONICAL_KEYS: std::sync::LazyLock<[Vec<u8>; 6]> =
    std::sync::LazyLock::new(|| CANONICAL_FIELDS.map(packed_key));

/// A member's values, in `CANONICAL_FIELDS` order.
type Fields<'c> = [Option<FieldValue<'c>>; 6];

/// A member's value: text, or a SHA-256 in hex already decoded (as members keep it, packed).
enum FieldValue<'c> {
    Text(Cow<'c, str>),
    Digest([u8; 32]),
}

impl<'c> From<Cow<'c, str>> for FieldValue<'c> {
    fn from(text: Cow<'c, str>) -> Self {
        FieldValue::Text(text)
    }
}

impl<'c> From<&'c str> for FieldValue<'c> {
    fn from(text: &'c str) -> Self {
        FieldValue::Text(Cow::Borrowed(text))
    }
}

/// A hashed value in its canonical form (valid hex decoded; base64 and anything else as sent),
/// and whether it is well formed in each encoding (`ENCODED`).
fn hashed(v: Option<Cell>) -> (FieldValue, [bool; 2]) {
    let Some(s) = v.and_then(|c| c.0) else {
        return (FieldValue::from(""), [false; 2]);
    };
    // Hex in lower case, as clients send it, is checked and decoded in one pass, and the member
    // keeps those bytes (`push_packed_digest`): checked here and then packed from its text by
    // `push_member_value`, each hash was read twice.
    if let Some(digest) = packed_hex(s.as_bytes()) {
        return (FieldValue::Digest(digest), [true, false]);
    }
    // One pass without branches for both questions (an early-exit search for upper case was
    // an eighth of the emulator's time in a large upload).
    let (hex, upper) = s.bytes().fold((true, false), |(hex, upper), b| {
        (hex & b.is_ascii_hexdigit(), upper | b.is_ascii_uppercase())
    });
    let ok = [s.len() == 64 && hex, s.len() == 44];
    // Hex is canonical in lower case; base64 is case-sensitive.
    let value = if upper && ok[0] {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        s
    };
    (value.into(), ok)
}

fn write_email<'a>(v: Cell<'a>, fields: &mut Fields<'a>, verdict: &mut Verdict) {
    let (value, ok) = hashed(Some(v));
    verdict.check(ok, "email_address");
    fields[0] = Some(value);
}

fn write_phone<'a>(v: Cell<'a>, fields: &mut Fields<'a>, verdict: &mut Verdict) {
    let (value, ok) = hashed(Some(v));
    verdict.check(ok, "phone_number");
    fields[3] = Some(value);
}

fn write_address<'a>(a: &mut AddressIn<'a>, fields: &mut Fields<'a>, verdict: &mut Verdict) {
    let (given, ok) = hashed(a.given_name.take());
    verdict.check(ok, "address.given_name");
    fields[2] = Some(given);
    let (family, ok) = hashed(a.family_name.take());
    verdict.check(ok, "address.family_name");
    fields[1] = Some(family);
    let region = a
        .region_code
        .take()
        .and_then(|c| c.0)
        .filter(|r| r.len() == 2);
    verdict.check([region.is_some(); 2], "address.region_code");
    fields[5] = region.map(FieldValue::from);
    let postal = a
        .postal_code
        .take()
        .and_then(|c| c.0)
        .filter(|p| !p.is_empty());
    verdict.check([postal.is_some(); 2], "address.postal_code");
    fields[4] = postal.map(FieldValue::from);
}

/// Writes a member's canonical form (`{"emailAddress":"…",…}`) and records in `verdict` the
/// first field invalid in each encoding. (`Members` keeps what is written if the member is valid
/// in either encoding.)
fn member(ids: Option<&Identifiers>, verdict: &mut Verdict, out: &mut Vec<u8>) {
    let Some(ids) = ids else {
        verdict.check([false; 2], "userData.userIdentifiers");
        return;
    };
    if ids.count == 0 || ids.count > MAX_IDENTIFIERS {
        verdict.check([false; 2], "user_identifiers");
        return;
    }
    verdict.and(ids.verdict);
    let fields = &ids.fields;
    out.push(b'{');
    let mut first = true;
    for (key, value) in CANONICAL_KEYS.iter().zip(fields) {
        if let Some(v) = value {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            match v {
                FieldValue::Text(text) => push_member_value(out, text),
                FieldValue::Digest(digest) => push_packed_digest(out, digest),
            }
        }
    }
    out.push(b'}');
}

/// Reads a request body: by the fast reader if it takes it, else by serde, which decides what
/// the fast reader leaves (and refuses what is not a request).
fn read_request(text: &str) -> Option<MembersRequest> {
    fast::request(text).or_else(|| serde_json::from_str(text).ok())
}

/// `audienceMembers:ingest`, `:remove` and `:removeAll`.
pub async fn audience_members(
    State(app): State<AppState>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    // Checked as UTF-8 once here, so the parser need not check every string it borrows.
    let text = simdutf8::basic::from_utf8(&body).unwrap_or_default();
    let Some(v) = read_request(text) else {
        return invalid("body", "not JSON");
    };
    let lists = match destination_lists(&app, &v.destinations) {
        Ok(lists) => lists,
        Err(refused) => return refused,
    };
    let action = action.trim_start_matches("audienceMembers:").to_string();
    if action == "removeAll" {
        return remove_all(&app, fault, v.remove_as_of_time.as_str(), lists);
    }
    let Some(mut members) = v.audience_members else {
        return invalid("audience_members", "is required");
    };
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_rows_per_request = s.max_rows_per_request.max(members.count as u64);
    });
    if members.count > MAX_MEMBERS {
        app.store.with(|s| s.rejected += 1);
        return invalid(
            "audience_members",
            "at most 10000 audience members per request",
        );
    }
    let encoding = enum_name(&v.encoding, ENCODINGS).unwrap_or_default();
    if encoding != "HEX" && encoding != "BASE64" {
        app.store.with(|s| s.rejected += 1);
        return invalid("encoding", "is required for user data: HEX or BASE64");
    }
    let ingest = action == "ingest";
    if ingest {
        if let Err(refused) =
            check_terms_and_consent(&app, &v.terms_of_service, &v.consent, members.bad_consent)
        {
            return refused;
        }
    } else if action != "remove" {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Method not found.",
            vec![],
        );
    }
    let chosen = usize::from(encoding != ENCODED[0]);
    if let Some((i, field)) = members.invalid[chosen] {
        app.store.with(|s| s.rejected += 1);
        return invalid(
            &format!("audience_members[{i}].user_data.{field}"),
            "invalid value",
        );
    }
    let identifiers = members.identifiers;
    let mut canonical = std::mem::take(&mut members.canonical);
    let records = canonical.len() as u64;
    for (i, list) in lists.iter().enumerate() {
        let members = if i + 1 == lists.len() {
            std::mem::take(&mut canonical)
        } else {
            canonical.clone()
        };
        app.store.apply(list, None, ingest, members, false);
    }
    let id = new_request(&app, lists, records, identifiers, !ingest);
    finish(
        &app,
        fault,
        axum::Json(json!({"requestId": id})).into_response(),
    )
}

/// The user lists a request's destinations name (1 to 10, each with its operating account's
/// type, each a Google list of the store), or the Data Manager's refusal.
fn destination_lists(app: &AppState, destinations: &Value) -> Result<Vec<String>, Response> {
    let Some(destinations) = destinations.as_array().filter(|d| !d.is_empty()) else {
        return Err(invalid(
            "destinations",
            "at least one destination is required",
        ));
    };
    if destinations.len() > MAX_DESTINATIONS {
        return Err(invalid(
            "destinations",
            "at most 10 destinations per request",
        ));
    }
    let mut lists = vec![];
    for (i, d) in destinations.iter().enumerate() {
        if enum_name(&d["operatingAccount"]["accountType"], ACCOUNT_TYPES)
            .is_none_or(|t| t == "ACCOUNT_TYPE_UNSPECIFIED")
        {
            let field = format!("destinations[{i}].operating_account.account_type");
            return Err(invalid(&field, "is required"));
        }
        let list = d["productDestinationId"].as_str().unwrap_or("");
        match app.store.get(list) {
            Some(a) if a.platform == "google" => lists.push(a.id),
            _ => {
                let field = format!("destinations[{i}].product_destination_id");
                return Err(invalid(&field, "user list not found"));
            }
        }
    }
    Ok(lists)
}

/// `audienceMembers:removeAll`: empties the lists, or removes the members last added before
/// `remove_as_of_time` (which must not be in the future).
fn remove_all(app: &AppState, fault: Fault, as_of: Option<&str>, lists: Vec<String>) -> Response {
    let as_of = match as_of {
        None => None,
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) if t <= chrono::Utc::now() => Some(t.with_timezone(&chrono::Utc)),
            Ok(_) => return invalid("remove_as_of_time", "must not be in the future"),
            Err(_) => return invalid("remove_as_of_time", "not an RFC 3339 time"),
        },
    };
    for list in &lists {
        app.store.remove_added_before(list, as_of);
    }
    let id = new_request(app, lists, 0, 0, true);
    finish(
        app,
        fault,
        axum::Json(json!({"requestId": id})).into_response(),
    )
}

/// An ingest's conditions: the Customer Match terms accepted, and every consent status, of the
/// request or of a member (`bad_consent`, as the reader found it), a known one.
fn check_terms_and_consent(
    app: &AppState,
    terms: &Value,
    consent: &Value,
    bad_consent: Option<(usize, &'static str)>,
) -> Result<(), Response> {
    let tos = enum_name(&terms["customerMatchTermsOfServiceStatus"], TOS);
    if tos.as_deref() != Some("ACCEPTED") {
        app.store.with(|s| s.rejected += 1);
        return Err(error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "The Customer Match terms of service must be accepted: termsOfService.customerMatchTermsOfServiceStatus = ACCEPTED",
            vec![
                json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "TERMS_OF_SERVICE_NOT_ACCEPTED", "domain": "datamanager.googleapis.com"}),
            ],
        ));
    }
    let request_consent = ["adUserData", "adPersonalization"]
        .into_iter()
        .find(|field| {
            let c = &consent[field];
            !c.is_null() && enum_name(c, CONSENT).is_none()
        });
    if let Some((i, field)) = request_consent.map(|f| (0, f)).or(bad_consent) {
        return Err(invalid(
            &format!("consent[{i}].{field}"),
            "unknown consent status",
        ));
    }
    Ok(())
}

fn new_request(
    app: &AppState,
    lists: Vec<String>,
    records: u64,
    identifiers: u64,
    removal: bool,
) -> String {
    let mut n = app.google.next_request.lock().unwrap();
    *n += 1;
    let id = format!("sandbox-{:08x}", *n);
    app.google
        .requests
        .lock()
        .unwrap()
        .insert(id.clone(), (lists, records, identifiers, removal));
    id
}

pub async fn request_status(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(id) = q.get("requestId") else {
        return invalid("request_id", "is required");
    };
    let Some((lists, records, identifiers, removal)) =
        app.google.requests.lock().unwrap().get(id).cloned()
    else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Request not found.",
            vec![],
        );
    };
    let per: Vec<Value> = lists
        .iter()
        .map(|l| {
            let mut s = json!({
                "destination": {"productDestinationId": l},
                "requestStatus": "SUCCESS",
            });
            if removal {
                s["audienceMembersRemovalStatus"] =
                    json!({"userDataRemovalStatus": {"recordCount": records, "userIdentifierCount": identifiers}});
            } else {
                s["audienceMembersIngestionStatus"] = json!({"userDataIngestionStatus": {
                    "recordCount": records, "userIdentifierCount": identifiers,
                    "uploadMatchRateRange": "MATCH_RATE_RANGE_51_TO_60"}});
            }
            s
        })
        .collect();
    finish(
        &app,
        fault,
        axum::Json(json!({"requestStatusPerDestination": per})).into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// Reads a request body with both readers: what the serde reader makes of it, having checked
    /// that the fast reader, where it takes the body, makes the same.
    fn read_both(body: &str) -> Option<MembersRequest> {
        let by_serde = serde_json::from_str::<MembersRequest>(body).ok();
        if let Some(fast) = fast::request(body) {
            assert_eq!(
                Some(&fast),
                by_serde.as_ref(),
                "the readers differ on {body}"
            );
        }
        by_serde
    }

    /// Reads an `audienceMembers` list with both readers (`read_both`).
    fn read_members(members_json: &str) -> Members {
        let body = format!(r#"{{"audienceMembers":{members_json}}}"#);
        assert!(
            fast::request(&body).is_some(),
            "the fast reader takes {body}"
        );
        read_both(&body).unwrap().audience_members.unwrap()
    }

    /// Parses an `audienceMembers` list: its canonical members and its first invalid member in
    /// each encoding.
    fn parse(members_json: &str) -> (Vec<String>, FirstInvalid) {
        let m = read_members(members_json);
        let canonical = m
            .canonical
            .iter()
            .map(crate::sandbox::state::unpack)
            .collect();
        (canonical, m.invalid)
    }

    /// The canonical member a JSON `audienceMembers` entry becomes in HEX, or the field at fault.
    fn canonical(member_json: &str) -> Result<String, &'static str> {
        let (mut canonical, invalid) = parse(&format!("[{member_json}]"));
        match invalid[0] {
            Some((_, field)) => Err(field),
            None => Ok(canonical.remove(0)),
        }
    }

    fn with_ids(ids: &[String]) -> String {
        format!(
            r#"{{"userData":{{"userIdentifiers":[{}]}}}}"#,
            ids.join(",")
        )
    }

    fn email(v: &str) -> String {
        format!(r#"{{"emailAddress":"{v}"}}"#)
    }

    #[test]
    fn identifiers_of_each_kind_make_one_canonical_member() {
        let address = format!(
            r#"{{"address":{{"givenName":"{A}","familyName":"{B}","regionCode":"US","postalCode":"94105"}}}}"#
        );
        let phone = format!(r#"{{"phoneNumber":"{}"}}"#, A.to_uppercase());
        assert_eq!(
            canonical(&with_ids(&[address, email(B), phone])).unwrap(),
            format!(
                r#"{{"emailAddress":"{B}","familyName":"{B}","givenName":"{A}","phoneNumber":"{A}","postalCode":"94105","regionCode":"US"}}"#
            )
        );
    }

    #[test]
    fn a_hash_in_either_case_is_kept_as_the_bytes_its_canonical_text_packs_to() {
        let hash = "0123456789abcdef".repeat(4);
        let kept = |v: &str| -> Vec<Vec<u8>> {
            let m = read_members(&format!("[{}]", with_ids(&[email(v)])));
            m.canonical.iter().map(<[u8]>::to_vec).collect()
        };
        let mut packed = vec![];
        crate::sandbox::state::pack(&format!(r#"{{"emailAddress":"{hash}"}}"#), &mut packed);
        assert_eq!(kept(&hash), [packed.clone()]);
        assert_eq!(kept(&hash.to_uppercase()), [packed]);
    }

    #[test]
    fn a_later_identifier_of_a_kind_replaces_an_earlier_one_but_both_are_validated() {
        assert_eq!(
            canonical(&with_ids(&[email(A), email(B)])).unwrap(),
            format!(r#"{{"emailAddress":"{B}"}}"#)
        );
        assert_eq!(
            canonical(&with_ids(&[email("not-a-hash"), email(B)])),
            Err("email_address")
        );
    }

    #[test]
    fn identifiers_are_judged_in_the_order_they_come() {
        let phone = |v: &str| format!(r#"{{"phoneNumber":"{v}"}}"#);
        let unknown = r#"{"mobileId":"x"}"#.to_string();
        assert_eq!(
            canonical(&with_ids(&[phone("bad"), email("bad")])),
            Err("phone_number")
        );
        assert_eq!(
            canonical(&with_ids(&[email("bad"), unknown])),
            Err("email_address")
        );
        let bad_region = format!(
            r#"{{"address":{{"givenName":"{A}","familyName":"{B}","regionCode":"USA","postalCode":"1"}}}}"#
        );
        assert_eq!(
            canonical(&with_ids(&[bad_region, phone("bad"), phone(A)])),
            Err("address.region_code")
        );
    }

    #[test]
    fn a_field_given_twice_refuses_the_request() {
        let twice = [
            format!(
                r#"[{{"userData":{{"userIdentifiers":[{}]}},"userData":{{}}}}]"#,
                email(A)
            ),
            format!(
                r#"[{{"userData":{{"userIdentifiers":[{}],"userIdentifiers":null}}}}]"#,
                email(A)
            ),
            format!(
                r#"[{{"consent":{{}},"userData":{{"userIdentifiers":[{}]}},"consent":{{}}}}]"#,
                email(A)
            ),
        ];
        for members in twice {
            let error = serde_json::from_str::<Members>(&members).err();
            assert!(
                error.is_some_and(|e| e.to_string().contains("duplicate field")),
                "{members}"
            );
            let body = format!(r#"{{"audienceMembers":{members}}}"#);
            assert_eq!(read_both(&body), None, "{body}");
            assert!(read_request(&body).is_none(), "{body}");
        }
    }

    #[test]
    fn members_without_identifiers_or_with_too_many_or_unknown_ones_are_invalid() {
        assert_eq!(
            canonical(r#"{"userData":{}}"#),
            Err("userData.userIdentifiers")
        );
        assert_eq!(canonical(&with_ids(&[])), Err("user_identifiers"));
        let eleven = vec![email(A); MAX_IDENTIFIERS + 1];
        assert_eq!(canonical(&with_ids(&eleven)), Err("user_identifiers"));
        let ten = vec![email(A); MAX_IDENTIFIERS];
        assert!(canonical(&with_ids(&ten)).is_ok());
        let unknown = r#"{"mobileId":"x"}"#.to_string();
        assert_eq!(
            canonical(&with_ids(&[email(A), unknown])),
            Err("user_identifiers")
        );
    }

    #[test]
    fn members_are_judged_in_both_encodings_and_the_first_invalid_one_is_named() {
        let base64 = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=";
        assert_eq!(base64.len(), 44);
        let members = format!(
            "[{}, {}, {}]",
            with_ids(&[email(A)]),
            with_ids(&[email(base64)]),
            with_ids(&[email("x")])
        );
        let (canonical, invalid) = parse(&members);
        assert_eq!(
            invalid,
            [Some((1, "email_address")), Some((0, "email_address"))]
        );
        assert_eq!(
            canonical.len(),
            2,
            "members valid in one encoding are kept: {canonical:?}"
        );
    }

    #[test]
    fn a_member_with_an_unknown_consent_status_is_named_after_the_request_consent() {
        let members = format!(
            r#"[{}, {{"userData":{{"userIdentifiers":[{}]}},"consent":{{"adPersonalization":"MAYBE"}}}}]"#,
            with_ids(&[email(A)]),
            email(B)
        );
        let m = read_members(&members);
        assert_eq!(m.bad_consent, Some((2, "adPersonalization")));
        assert_eq!((m.count, m.identifiers), (2, 2));
    }

    #[test]
    fn the_fast_reader_reads_what_serde_reads_and_leaves_it_what_it_does_not_take() {
        let ids = format!(
            r#"[{{"emailAddress":"{A}"}},{{"phoneNumber":null}},{{"address":{{"givenName":"{A}","familyName":"{B}","regionCode":"US","postalCode":"94105","x":[1,{{}}]}}}}]"#
        );
        let head = r#""destinations":[{"operatingAccount":{"accountType":"GOOGLE_ADS","accountId":"1"},"productDestinationId":"7"}],"encoding":"HEX","termsOfService":{"customerMatchTermsOfServiceStatus":"ACCEPTED"},"consent":{"adUserData":"CONSENT_GRANTED"}"#;
        let members = |m: &str| format!(r#"{{{head},"audienceMembers":[{m}]}}"#);
        let taken = [
            format!(r#"{{{head},"audienceMembers":[{{"userData":{{"userIdentifiers":{ids}}}}}]}}"#),
            // Members first, spaced out, with fields the reader skips and per-member consent.
            format!(
                "{{ \"audienceMembers\" : [ {{ \"consent\": {{\"adPersonalization\": 2}}, \"userData\" : {{ \"userIdentifiers\" : {ids} , \"z\": null }} , \"y\": 3 }} ] ,\n {head} , \"validateOnly\": true }}\n"
            ),
            format!(
                r#"{{{head},"audienceMembers":[{{"userData":null}},{{"userData":{{"userIdentifiers":null}}}},{{}},{{"userData":{{"userIdentifiers":[]}}}}]}}"#
            ),
            format!(r#"{{"audienceMembers":null,{head}}}"#),
            // serde skips a field it does not know however deep it goes, and so does this reader.
            members(&format!(
                r#"{{"deep":{}{},"userData":null}}"#,
                "[".repeat(200),
                "]".repeat(200)
            )),
            r#"{"removeAsOfTime":"2026-01-01T00:00:00Z","audienceMembers":[]}"#.to_string(),
            "{}".to_string(),
        ];
        for body in &taken {
            assert!(
                fast::request(body).is_some(),
                "the fast reader takes {body}"
            );
            assert!(read_both(body).is_some(), "{body}");
        }
        // Bodies the fast reader leaves to serde, which reads some and refuses others.
        let left = [
            members(&format!(
                r#"{{"userData":{{"userIdentifiers":[{{"emailAddress":"{A}\u0041"}}]}}}}"#
            )),
            members(r#"{"userData":{"userIdentifiers":[{"emailAddress":12}]}}"#),
            members(
                r#"{"userData":{"userIdentifiers":[{"emailAddress":"a","emailAddress":"b"}]}}"#,
            ),
            members(
                r#"{"userData":{"userIdentifiers":[{"address":{"postalCode":"1","postalCode":"2"}}]}}"#,
            ),
            members(r#"{"userData":{},"userData":null}"#),
            members(r#"{"userData":{"userIdentifiers":[]},}"#),
            members(r#"{"userData":{"userIdentifiers":[["a"]]}}"#),
            members(r#""not a member""#),
            format!(r#"{{{head},"encoding":"HEX","audienceMembers":[]}}"#),
            format!(r#"{{"\u0061udienceMembers":[],{head}}}"#),
            format!(r#"{{{head},"audienceMembers":[]}} x"#),
            format!(r#"{{{head},"audienceMembers":[]"#),
            format!(r#"{{{head},"audienceMembers":[{{"userData":nul}}]}}"#),
            format!(
                r#"{{{head},"audienceMembers":[{{"userData":{{"userIdentifiers":[{{"emailAddress":"a	b"}}]}}}}]}}"#
            ),
        ];
        for body in &left {
            assert!(
                fast::request(body).is_none(),
                "the fast reader leaves {body}"
            );
            read_both(body);
        }
        // serde refuses values nested past 127 levels from the top of the body: a member's
        // consent 125 deep is refused, not read by the fast reader from its own top.
        let deep = members(&format!(
            r#"{{"consent":{}{}}}"#,
            "[".repeat(125),
            "]".repeat(125)
        ));
        assert!(fast::request(&deep).is_none());
        assert!(read_request(&deep).is_none());
        let fine = members(&format!(
            r#"{{"consent":{}{}}}"#,
            "[".repeat(60),
            "]".repeat(60)
        ));
        assert!(fast::request(&fine).is_some());
        assert!(read_both(&fine).is_some());
    }
}
