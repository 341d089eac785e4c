//! Microsoft Advertising emulator: Customer Match lists of the Campaign Management API v13 in
//! its REST form (shared/spec/platforms-more.md §E), JSON shapes as Microsoft's REST SDK
//! (`msads`) sends and reads them (longs as strings):
//!
//! - `POST /CampaignManagement/v13/Audiences` (AddAudiences): `{"Audiences": [...]}` of
//!   customer lists only (`Type: CustomerList`), `Scope: Customer` (a customer list's only
//!   scope) with `ParentId` the `CustomerId` header, names of 1 to 128 characters unique per
//!   customer, `MembershipDuration` -1 or 1 to 390; answers `{"AudienceIds", "PartialErrors"}`,
//!   a refused list as `null` with a `BatchError` at its index (4859, 4838, 4843, 4848, 4842,
//!   4853 DuplicateAudienceName).
//! - `POST /CampaignManagement/v13/Audiences/QueryByIds` (GetAudiencesByIds): `Type` must
//!   name `CustomerList`; `AudienceIds` null or empty gives every list of the customer, else
//!   those lists, an unknown id as `null` with 4835 InvalidAudienceId.
//! - `POST /CampaignManagement/v13/CustomerListUserData/Apply`: `ActionType` `Add`, `Remove`
//!   or `Replace` (which empties the list first; else 8001), `CustomerListItemSubType` `Email`
//!   (CRM and Phone are "not currently supported": 8002), `AudienceId` a list of the customer
//!   (else 8000), 1 to 1,000 `CustomerListItems` (else 8006, 6999); each item a SHA-256 in
//!   lowercase hex, else refused with a `PartialErrors` entry 8004 EmailMustBeHashed at its
//!   `Index` (so is the `invalid_row_rate` share of good ones) while the others are applied.
//!
//! Every request is checked for `Authorization: Bearer <token>` (HTTP 401, 105
//! InvalidCredentials), `DeveloperToken`, `CustomerId` and `CustomerAccountId` (the ids as
//! digits; HTTP 400, 116 RequestMissingHeaders). Documented test values make the refusals a
//! job can meet: the access token `EXPIRED_ACCESS_TOKEN` is answered 109
//! AuthenticationTokenExpired (HTTP 401), the developer token `INVALID_DEVELOPER_TOKEN` 105
//! InvalidCredentials (HTTP 401), and the customer `CUSTOMER_WITHOUT_TERMS` has not accepted
//! the Customer Match terms in the UI: its Apply calls are refused with 8003
//! CustomerListTermsAndConditionsNotAccepted unless they carry `AcceptCustomerMatchTerm: true`
//! (and `false` is refused for any customer, as documented).
//!
//! Faults are `ApplicationFault`s with a `TrackingId` (also a `TrackingId` header):
//! `AdApiFaultDetail` with `Errors` for the service's own (credentials, throttling, internal
//! errors), `ApiFaultDetail` with `OperationErrors` for an operation's. Past `app.rate
//! ("microsoft")` calls within a rolling second (none: no throttling) a call is answered 117
//! CallRateExceeded with HTTP 400 (the REST SDK knows only 400, 401, 403 and 500 for faults);
//! Microsoft's window is a minute, this one a second, and it says so in a `Retry-After: 1`
//! header, which Microsoft does not document and a client honours when present. Injected
//! faults: `error` is HTTP 500 with 0 InternalError, `throttle` is 117, `drop` applies the call
//! and then drops the connection. Lists are kept in the shared store (platform `microsoft`,
//! account the customer id), each e-mail a member `{"Email": "<hash>"}`.

// Checks answer with the platform's error `Response`; a handler returns it as it is.
#![allow(clippy::result_large_err)]

use super::AppState;
use super::faults::Fault;
use super::state::{CallWindow, MemberBatch, single_key_member};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// An access token the sandbox answers as expired (109 AuthenticationTokenExpired).
pub const EXPIRED_ACCESS_TOKEN: &str = "sandbox-expired-access-token";
/// A developer token the sandbox refuses (105 InvalidCredentials).
pub const INVALID_DEVELOPER_TOKEN: &str = "sandbox-invalid-developer-token";
/// A customer that has not accepted the Customer Match terms in the Microsoft Advertising UI.
pub const CUSTOMER_WITHOUT_TERMS: &str = "8003";

const PLATFORM: &str = "microsoft";
/// The key of a member in the store: the item's `CustomerListItemSubType`.
const ITEM_KEY: &str = "Email";
const MAX_ITEMS: usize = 1000;
const MAX_NAME_CHARS: usize = 128;
/// The throttling window: Microsoft's is a minute; a second keeps tests short.
const CALL_WINDOW: Duration = Duration::from_secs(1);

/// The emulator's own state; lists and members are in the shared store.
#[derive(Default)]
pub struct MicrosoftState {
    calls: CallWindow,
    next_tracking_id: AtomicU64,
}

impl MicrosoftState {
    fn tracking_id(&self) -> String {
        let n = self.next_tracking_id.fetch_add(1, Ordering::Relaxed);
        format!("sandbox-{n:012}")
    }
}

type Ms = (AppState, Arc<MicrosoftState>);

/// The emulator's routes, with their state.
pub fn routes(app: AppState) -> Router {
    Router::new()
        .route("/CampaignManagement/v13/Audiences", post(add_audiences))
        .route(
            "/CampaignManagement/v13/Audiences/QueryByIds",
            post(audiences_by_ids),
        )
        .route(
            "/CampaignManagement/v13/CustomerListUserData/Apply",
            post(apply_customer_list_user_data),
        )
        .with_state((app, Arc::new(MicrosoftState::default())))
}

/// Who called, once the headers are checked, and the fault the call is to meet.
struct Caller {
    fault: Fault,
    customer_id: String,
}

/// A refusal of one item of a call: its code, symbolic code and message.
type Refusal = (i64, &'static str, &'static str);

async fn add_audiences(State((app, ms)): State<Ms>, headers: HeaderMap, body: Bytes) -> Response {
    match gate(&app, &ms, &headers).await {
        Ok(caller) => {
            let response = create_lists(&app, &ms, &caller, &body);
            finish(&app, caller.fault, response)
        }
        Err(answer) => answer,
    }
}

async fn audiences_by_ids(
    State((app, ms)): State<Ms>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match gate(&app, &ms, &headers).await {
        Ok(caller) => {
            let response = lists_by_ids(&app, &ms, &caller, &body);
            finish(&app, caller.fault, response)
        }
        Err(answer) => answer,
    }
}

async fn apply_customer_list_user_data(
    State((app, ms)): State<Ms>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match gate(&app, &ms, &headers).await {
        Ok(caller) => {
            let response = apply(&app, &ms, &caller, &body);
            finish(&app, caller.fault, response)
        }
        Err(answer) => answer,
    }
}

/// Counts the request, injects the faults it is to meet, throttles, and checks its headers.
async fn gate(
    app: &AppState,
    ms: &MicrosoftState,
    headers: &HeaderMap,
) -> Result<Caller, Response> {
    app.store.with(|s| s.requests += 1);
    let asked = headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok());
    let fault = app.faults.decide(asked).await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(service_fault(
                ms,
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                "InternalError",
                "An internal error has occurred.",
            ));
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return Err(call_rate_exceeded(ms));
        }
        _ => {}
    }
    if !ms.calls.admit(app.rate(PLATFORM), CALL_WINDOW) {
        app.store.with(|s| s.rate_limited += 1);
        return Err(call_rate_exceeded(ms));
    }
    let customer_id = authenticate(ms, headers)?;
    Ok(Caller { fault, customer_id })
}

/// Checks the four headers every call takes; the caller's customer id.
fn authenticate(ms: &MicrosoftState, headers: &HeaderMap) -> Result<String, Response> {
    let bearer = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let unauthorized = |code: i64, symbol: &str, message: &str| -> Result<String, Response> {
        Err(service_fault(
            ms,
            StatusCode::UNAUTHORIZED,
            code,
            symbol,
            message,
        ))
    };
    match bearer {
        None => {
            return unauthorized(
                105,
                "InvalidCredentials",
                "Authentication failed: the Authorization header must carry the OAuth access token as `Bearer <token>`.",
            );
        }
        Some(EXPIRED_ACCESS_TOKEN) => {
            return unauthorized(
                109,
                "AuthenticationTokenExpired",
                "Authentication token expired. Please renew it or obtain a new token.",
            );
        }
        Some(_) => {}
    }
    let missing = |name: &str| {
        let message = format!("The {name} header is required (the ids as digits).");
        service_fault(
            ms,
            StatusCode::BAD_REQUEST,
            116,
            "RequestMissingHeaders",
            &message,
        )
    };
    match header(headers, "developertoken") {
        None => return Err(missing("DeveloperToken")),
        Some(INVALID_DEVELOPER_TOKEN) => {
            return unauthorized(
                105,
                "InvalidCredentials",
                "Authentication failed: the developer token is not valid for this environment.",
            );
        }
        Some(_) => {}
    }
    let digits = |name: &str| {
        header(headers, &name.to_ascii_lowercase())
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
            .ok_or_else(|| missing(name))
    };
    digits("CustomerAccountId")?;
    digits("CustomerId")
}

/// A header's value, trimmed; `None` when absent or empty.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `Audiences`: creates the customer lists asked for, each refusal at its index.
fn create_lists(app: &AppState, ms: &MicrosoftState, caller: &Caller, body: &[u8]) -> Response {
    let Some(request) = parse(body) else {
        return null_request(app, ms);
    };
    let Some(asked) = request["Audiences"].as_array().filter(|a| !a.is_empty()) else {
        return refused(
            app,
            operation_fault(
                ms,
                4844,
                "AudiencesArrayShouldNotBeNullOrEmpty",
                "The list of audiences cannot be null or empty.",
            ),
        );
    };
    let mut ids = vec![];
    let mut errors = vec![];
    for (i, audience) in asked.iter().enumerate() {
        match new_list(app, &caller.customer_id, audience) {
            Ok(id) => ids.push(json!(id)),
            Err(refusal) => {
                ids.push(Value::Null);
                errors.push(batch_error(i, refusal, &format!("Audiences[{i}]")));
            }
        }
    }
    respond(
        ms,
        StatusCode::OK,
        json!({"AudienceIds": ids, "PartialErrors": errors}),
    )
}

/// Creates one customer list for `customer`, or says why not.
fn new_list(app: &AppState, customer: &str, audience: &Value) -> Result<String, Refusal> {
    if audience["Type"] != "CustomerList" {
        return Err((
            4859,
            "InvalidAudienceType",
            "The sandbox creates customer lists only: Type must be CustomerList.",
        ));
    }
    let name = audience["Name"].as_str().unwrap_or_default();
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err((
            4838,
            "InvalidAudienceName",
            "The audience name is invalid: it has 1 to 128 characters.",
        ));
    }
    if audience["Scope"] != "Customer" {
        return Err((
            4843,
            "AudienceParentIdDoesNotMatchScope",
            "A customer list's only scope is Customer, with the customer's id as ParentId.",
        ));
    }
    if id_text(&audience["ParentId"]).as_deref() != Some(customer) {
        return Err((
            4848,
            "InvalidAudienceParentId",
            "ParentId must be the CustomerId of the request.",
        ));
    }
    let duration = &audience["MembershipDuration"];
    let duration_ok = duration.is_null()
        || duration
            .as_i64()
            .is_some_and(|d| d == -1 || (1..=390).contains(&d));
    if !duration_ok {
        return Err((
            4842,
            "InvalidAudienceMembershipDuration",
            "Audience membership duration is invalid: -1, or 1 to 390 days.",
        ));
    }
    let taken = customer_lists(app, customer).iter().any(|a| a.name == name);
    if taken {
        return Err((4853, "DuplicateAudienceName", "Audience name is duplicate."));
    }
    Ok(app.store.create(PLATFORM, customer, name).id)
}

/// `Audiences/QueryByIds`: the customer's lists, all of them or those asked for.
fn lists_by_ids(app: &AppState, ms: &MicrosoftState, caller: &Caller, body: &[u8]) -> Response {
    let Some(request) = parse(body) else {
        return null_request(app, ms);
    };
    let Some(types) = request["Type"].as_str() else {
        return refused(
            app,
            operation_fault(ms, 4859, "InvalidAudienceType", "Type is required."),
        );
    };
    let lists = match types
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|t| t == "CustomerList")
    {
        true => customer_lists(app, &caller.customer_id),
        false => vec![],
    };
    let mut errors = vec![];
    let audiences: Vec<Value> = match request["AudienceIds"].as_array().filter(|a| !a.is_empty()) {
        None => lists.iter().map(list_json).collect(),
        Some(ids) => ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let id = id_text(id);
                match lists.iter().find(|a| Some(&a.id) == id.as_ref()) {
                    Some(list) => list_json(list),
                    None => {
                        let refusal = (4835, "InvalidAudienceId", "The audience ID is invalid.");
                        errors.push(batch_error(i, refusal, &format!("AudienceIds[{i}]")));
                        Value::Null
                    }
                }
            })
            .collect(),
    };
    respond(
        ms,
        StatusCode::OK,
        json!({"Audiences": audiences, "PartialErrors": errors}),
    )
}

fn customer_lists(app: &AppState, customer: &str) -> Vec<super::state::Audience> {
    app.store
        .list()
        .into_iter()
        .filter(|a| a.platform == PLATFORM && a.account == customer)
        .collect()
}

fn list_json(a: &super::state::Audience) -> Value {
    json!({
        "Id": a.id, "Name": a.name, "Type": "CustomerList", "Scope": "Customer",
        "ParentId": a.account, "Description": null, "MembershipDuration": null,
        // Microsoft fills the sizes after 24 to 48 hours; the sandbox at once.
        "SearchSize": a.size.to_string(), "AudienceNetworkSize": a.size.to_string(),
        "SupportedCampaignTypes": ["Search", "Shopping", "DynamicSearchAds", "Audience"],
        "CustomerShare": null, "ForwardCompatibilityMap": null,
    })
}

/// What an Apply does to a list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Add,
    Remove,
    Replace,
}

/// `CustomerListUserData/Apply`: checks the call, then applies its good items.
fn apply(app: &AppState, ms: &MicrosoftState, caller: &Caller, body: &[u8]) -> Response {
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
    let Some(request) = parse(body) else {
        return null_request(app, ms);
    };
    let data = &request["CustomerListUserData"];
    if !data.is_object() {
        return null_request(app, ms);
    }
    let (list, action) = match checked_call(app, caller, data) {
        Ok(checked) => checked,
        Err(refusal) => return refused(app, operation_fault(ms, refusal.0, refusal.1, refusal.2)),
    };
    let items = data["CustomerListItems"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    app.store
        .with(|s| s.max_rows_per_request = s.max_rows_per_request.max(items.len() as u64));
    if items.is_empty() {
        let refusal = (
            8006,
            "EitherEmailOrCRMIDShouldBeProvided",
            "Either email address or CRM Id should be provided.",
        );
        return refused(app, operation_fault(ms, refusal.0, refusal.1, refusal.2));
    }
    if items.len() > MAX_ITEMS {
        return refused(
            app,
            operation_fault(
                ms,
                6999,
                "CampaignServiceBatchLimitExceeded",
                "The maximum number of items per request would be exceeded: at most 1000 CustomerListItems.",
            ),
        );
    }
    let (members, errors) = members_and_refusals(app, items);
    app.store.apply(
        &list,
        None,
        action != Action::Remove,
        members,
        action == Action::Replace,
    );
    respond(ms, StatusCode::OK, json!({"PartialErrors": errors}))
}

/// The list and action of an Apply, once its action, item type, list and terms are checked.
fn checked_call(
    app: &AppState,
    caller: &Caller,
    data: &Value,
) -> Result<(String, Action), Refusal> {
    let action = match data["ActionType"].as_str() {
        Some("Add") => Action::Add,
        Some("Remove") => Action::Remove,
        Some("Replace") => Action::Replace,
        _ => {
            return Err((
                8001,
                "InvalidCustomerListActionType",
                "The Customer List Action Type can only be Add, Replace, or Delete.",
            ));
        }
    };
    if data["CustomerListItemSubType"] != "Email" {
        return Err((
            8002,
            "CustomerListItemSubTypeNotSupported",
            "The Customer List Item sub type is not supported.",
        ));
    }
    let list = id_text(&data["AudienceId"])
        .and_then(|id| app.store.get(&id))
        .filter(|a| a.platform == PLATFORM && a.account == caller.customer_id);
    let Some(list) = list else {
        return Err((8000, "InvalidCustomerListId", "Invalid CustomerList Id"));
    };
    let accepted = match data["AcceptCustomerMatchTerm"] {
        Value::Bool(accept) => accept,
        _ => caller.customer_id != CUSTOMER_WITHOUT_TERMS,
    };
    if !accepted {
        return Err((
            8003,
            "CustomerListTermsAndConditionsNotAccepted",
            "The Customer Match 'Terms And Conditions' are not yet Accepted in the Microsoft Advertising web UI.",
        ));
    }
    Ok((list.id, action))
}

/// The items as members, and a `PartialErrors` entry for each refused one: not a SHA-256 in
/// lowercase hex, or drawn by the `invalid_row_rate` dice.
fn members_and_refusals(app: &AppState, items: &[Value]) -> (MemberBatch, Vec<Value>) {
    let mut members = MemberBatch::with_capacity(items.len(), items.len() * 48);
    let mut errors = vec![];
    let mut invalid_row = app.faults.invalid_rows();
    for (i, item) in items.iter().enumerate() {
        let hash = item.as_str().unwrap_or_default();
        if !is_sha256_hex(hash) || invalid_row() {
            let refusal = (
                8004,
                "EmailMustBeHashed",
                "Email address can't be in plain text and must be hashed.",
            );
            errors.push(batch_error(i, refusal, &format!("CustomerListItems[{i}]")));
            continue;
        }
        members.push(&single_key_member(ITEM_KEY, hash));
    }
    (members, errors)
}

fn is_sha256_hex(v: &str) -> bool {
    v.len() == 64
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A long as Microsoft's REST JSON carries it: a string of digits, or a number.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn parse(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn batch_error(index: usize, (code, symbol, message): Refusal, field_path: &str) -> Value {
    json!({
        "Code": code, "Details": null, "ErrorCode": symbol, "FieldPath": field_path,
        "ForwardCompatibilityMap": null, "Index": index, "Message": message, "Type": "BatchError",
    })
}

/// A fault of the service itself (credentials, throttling, internal): `AdApiFaultDetail`.
fn service_fault(
    ms: &MicrosoftState,
    status: StatusCode,
    code: i64,
    symbol: &str,
    message: &str,
) -> Response {
    let tracking_id = ms.tracking_id();
    let body = json!({
        "TrackingId": tracking_id, "Type": "AdApiFaultDetail",
        "Errors": [{"Code": code, "Detail": null, "ErrorCode": symbol, "Message": message}],
    });
    with_tracking_id((status, axum::Json(body)).into_response(), &tracking_id)
}

/// An operation's fault: `ApiFaultDetail` with its `OperationErrors`, HTTP 400.
fn operation_fault(ms: &MicrosoftState, code: i64, symbol: &str, message: &str) -> Response {
    let tracking_id = ms.tracking_id();
    let body = json!({
        "TrackingId": tracking_id, "Type": "ApiFaultDetail", "BatchErrors": [],
        "OperationErrors": [{"Code": code, "Details": null, "ErrorCode": symbol, "Message": message}],
    });
    with_tracking_id(
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response(),
        &tracking_id,
    )
}

/// 117 CallRateExceeded, with the sandbox's window as `Retry-After`.
fn call_rate_exceeded(ms: &MicrosoftState) -> Response {
    let mut response = service_fault(
        ms,
        StatusCode::BAD_REQUEST,
        117,
        "CallRateExceeded",
        "You have exceeded the number of calls that you are allowed to make in a minute. Please reduce the number of calls that you make per minute.",
    );
    let window = HeaderValue::from(CALL_WINDOW.as_secs());
    response.headers_mut().insert("retry-after", window);
    response
}

fn null_request(app: &AppState, ms: &MicrosoftState) -> Response {
    refused(
        app,
        operation_fault(ms, 100, "NullRequest", "The request message is null."),
    )
}

fn respond(ms: &MicrosoftState, status: StatusCode, body: Value) -> Response {
    let tracking_id = ms.tracking_id();
    with_tracking_id((status, axum::Json(body)).into_response(), &tracking_id)
}

fn with_tracking_id(mut response: Response, tracking_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(tracking_id) {
        response.headers_mut().insert("trackingid", v);
    }
    response
}

fn refused(app: &AppState, response: Response) -> Response {
    app.store.with(|s| s.rejected += 1);
    response
}

fn finish(app: &AppState, fault: Fault, response: Response) -> Response {
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}
