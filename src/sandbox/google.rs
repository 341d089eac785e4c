//! Google Data Manager API emulator: user lists and audience members (shared/spec/platforms.md
//! §2.B). Proto3 JSON mapping: lowerCamelCase fields, enums as names or numbers; errors as
//! `{"error": {code, message, status, details}}`; HTTP 429 RESOURCE_EXHAUSTED with the quota
//! name past the per-minute request budget.

use super::faults::Fault;
use super::state::{MemberBatch, push_member_value};
use super::{AppState, Cell};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_MEMBERS: usize = 10_000;
pub const MAX_IDENTIFIERS: usize = 10;
pub const MAX_DESTINATIONS: usize = 10;

/// Requests per rolling minute (Google's per-project quota); `None` turns throttling off.
#[derive(Clone, Debug, Default)]
pub struct GoogleLimits {
    pub requests_per_minute: Option<u64>,
}

#[derive(Default)]
pub struct GoogleState {
    pub limits: Mutex<GoogleLimits>,
    calls: Mutex<VecDeque<Instant>>,
    /// requestId -> (destination list ids, record count, identifier count, removal)
    requests: Mutex<HashMap<String, (Vec<String>, u64, u64, bool)>>,
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
/// the body.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MembersRequest<'a> {
    #[serde(default)]
    destinations: Value,
    #[serde(borrow, default)]
    audience_members: Option<Vec<MemberIn<'a>>>,
    #[serde(default)]
    encoding: Value,
    #[serde(default)]
    terms_of_service: Value,
    #[serde(default)]
    consent: Value,
    #[serde(default)]
    remove_as_of_time: Value,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberIn<'a> {
    #[serde(borrow, default)]
    user_data: Option<UserDataIn<'a>>,
    #[serde(default)]
    consent: Value,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserDataIn<'a> {
    #[serde(borrow, default)]
    user_identifiers: Option<Vec<IdentifierIn<'a>>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentifierIn<'a> {
    #[serde(borrow, default)]
    email_address: Option<Cell<'a>>,
    #[serde(borrow, default)]
    phone_number: Option<Cell<'a>>,
    #[serde(borrow, default)]
    address: Option<AddressIn<'a>>,
}

#[derive(serde::Deserialize)]
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

/// One audience member to its canonical form (`{"emailAddress":"…",…}`), or the field that is
/// invalid.
fn member<'a>(m: &'a MemberIn, encoding: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let ids = m
        .user_data
        .as_ref()
        .and_then(|u| u.user_identifiers.as_ref())
        .ok_or("userData.userIdentifiers")?;
    if ids.is_empty() || ids.len() > MAX_IDENTIFIERS {
        return Err("user_identifiers");
    }
    let text = |v: &'a Option<Cell>| v.as_ref().and_then(|c| c.0.as_deref());
    let hashed = |v: &'a Option<Cell>| -> Option<Cow<'a, str>> {
        let s = text(v)?;
        // One pass without branches for both questions (an early-exit search for upper case was
        // an eighth of the emulator's time in a large upload).
        let (hex, upper) = s.bytes().fold((true, false), |(hex, upper), b| {
            (hex & b.is_ascii_hexdigit(), upper | b.is_ascii_uppercase())
        });
        let ok = match encoding {
            "HEX" => s.len() == 64 && hex,
            _ => s.len() == 44,
        };
        if !ok {
            None
        } else if upper {
            Some(Cow::Owned(s.to_ascii_lowercase()))
        } else {
            Some(Cow::Borrowed(s))
        }
    };
    // Slots in CANONICAL_FIELDS order; a later identifier of a kind replaces an earlier one.
    let mut fields: [Option<Cow<'a, str>>; 6] = Default::default();
    for id in ids {
        if id.email_address.is_some() {
            fields[0] = Some(hashed(&id.email_address).ok_or("email_address")?);
        } else if id.phone_number.is_some() {
            fields[3] = Some(hashed(&id.phone_number).ok_or("phone_number")?);
        } else if let Some(a) = &id.address {
            fields[2] = Some(hashed(&a.given_name).ok_or("address.given_name")?);
            fields[1] = Some(hashed(&a.family_name).ok_or("address.family_name")?);
            let region = text(&a.region_code).filter(|r| r.len() == 2);
            fields[5] = Some(Cow::Borrowed(region.ok_or("address.region_code")?));
            let postal = text(&a.postal_code).filter(|p| !p.is_empty());
            fields[4] = Some(Cow::Borrowed(postal.ok_or("address.postal_code")?));
        } else {
            return Err("user_identifiers");
        }
    }
    out.push(b'{');
    let mut first = true;
    for (name, value) in CANONICAL_FIELDS.iter().zip(&fields) {
        if let Some(v) = value {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            push_member_value(out, v);
        }
    }
    out.push(b'}');
    Ok(())
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
    let text = std::str::from_utf8(&body).unwrap_or_default();
    let Ok(v) = serde_json::from_str::<MembersRequest>(text) else {
        return invalid("body", "not JSON");
    };
    let Some(destinations) = v.destinations.as_array().filter(|d| !d.is_empty()) else {
        return invalid("destinations", "at least one destination is required");
    };
    if destinations.len() > MAX_DESTINATIONS {
        return invalid("destinations", "at most 10 destinations per request");
    }
    let mut lists = vec![];
    for (i, d) in destinations.iter().enumerate() {
        if enum_name(&d["operatingAccount"]["accountType"], ACCOUNT_TYPES)
            .is_none_or(|t| t == "ACCOUNT_TYPE_UNSPECIFIED")
        {
            return invalid(
                &format!("destinations[{i}].operating_account.account_type"),
                "is required",
            );
        }
        let list = d["productDestinationId"].as_str().unwrap_or("");
        match app.store.get(list) {
            Some(a) if a.platform == "google" => lists.push(a.id),
            _ => {
                return invalid(
                    &format!("destinations[{i}].product_destination_id"),
                    "user list not found",
                );
            }
        }
    }
    let action = action.trim_start_matches("audienceMembers:").to_string();
    if action == "removeAll" {
        let as_of = match v.remove_as_of_time.as_str() {
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
        return finish(
            &app,
            fault,
            axum::Json(json!({"requestId": new_request(&app, lists, 0, 0, true)})).into_response(),
        );
    }
    let Some(members) = &v.audience_members else {
        return invalid("audience_members", "is required");
    };
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_rows_per_request = s.max_rows_per_request.max(members.len() as u64);
    });
    if members.len() > MAX_MEMBERS {
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
        let tos = enum_name(
            &v.terms_of_service["customerMatchTermsOfServiceStatus"],
            TOS,
        );
        if tos.as_deref() != Some("ACCEPTED") {
            app.store.with(|s| s.rejected += 1);
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "The Customer Match terms of service must be accepted: termsOfService.customerMatchTermsOfServiceStatus = ACCEPTED",
                vec![
                    json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "TERMS_OF_SERVICE_NOT_ACCEPTED", "domain": "datamanager.googleapis.com"}),
                ],
            );
        }
        for (i, c) in [&v.consent]
            .into_iter()
            .chain(members.iter().map(|m| &m.consent))
            .enumerate()
        {
            for field in ["adUserData", "adPersonalization"] {
                if !c[field].is_null() && enum_name(&c[field], CONSENT).is_none() {
                    return invalid(&format!("consent[{i}].{field}"), "unknown consent status");
                }
            }
        }
    } else if action != "remove" {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Method not found.",
            vec![],
        );
    }
    let mut canonical = MemberBatch::with_capacity(members.len(), 400);
    let mut identifiers = 0u64;
    for (i, m) in members.iter().enumerate() {
        let mut outcome = Ok(());
        canonical.push_with(|out| {
            outcome = member(m, &encoding, out);
            outcome.is_ok()
        });
        match outcome {
            Ok(()) => {
                identifiers += m
                    .user_data
                    .as_ref()
                    .and_then(|u| u.user_identifiers.as_ref())
                    .map_or(0, |ids| ids.len() as u64);
            }
            Err(field) => {
                app.store.with(|s| s.rejected += 1);
                return invalid(
                    &format!("audience_members[{i}].user_data.{field}"),
                    "invalid value",
                );
            }
        }
    }
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
