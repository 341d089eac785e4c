//! Microsoft Advertising Customer Match lists (Campaign Management API v13 in its REST form;
//! shared/spec/platforms-more.md §E), the single-step pattern: the customer list is found by
//! name among the customer's lists (`Audiences/QueryByIds` with `Type: CustomerList`) or created
//! (`Audiences`), then each batch is one `CustomerListUserData/Apply` of at most 1,000 SHA-256
//! hashed e-mails with the `ActionType` `Add`, `Remove` or `Replace` (a replace's first call
//! only: Microsoft's Replace removes all the list's earlier data, so the batches after it are
//! `Add`s). Every call carries `Authorization: Bearer`, `DeveloperToken`, `CustomerId` and
//! `CustomerAccountId`.
//!
//! Customer Match takes e-mails only: `CustomerListItemSubType` has `CRM` and `Phone` too, both
//! "Not currently supported" (customerlistitemsubtype.md), so members without an e-mail are not
//! sent and are counted as such. `config` is the job-file section, `request` encodes batches
//! and bodies, `service` reads Microsoft's answers and faults, `sink` runs the pipeline.

pub mod config;
pub mod request;
pub mod service;
pub mod sink;

use std::time::Duration;

/// Hashed e-mails per `CustomerListUserData/Apply` call: "The maximum user data for
/// CustomerListItems is 1000" (applycustomerlistuserdata.md).
pub const MAX_ITEMS: usize = 1000;
/// The Campaign Management service's REST root below the base URL.
pub const API_ROOT: &str = "CampaignManagement/v13";
/// Microsoft publishes no call rate for Campaign Management ("internal and subject to
/// change"); throttling answers error 117 within a sliding minute. Five a second is a guess
/// (UNCONFIRMED); when it is too many, error 117 is waited out.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 5.0;
/// After error 117 (CallRateExceeded) "you can resubmit the request under the limit after
/// waiting 60 seconds" (services-protocol.md). A `Retry-After` header, which Microsoft does not
/// document but the sandbox sends with its shorter window, is honoured instead when present.
pub const CALL_RATE_WAIT: Duration = Duration::from_secs(60);
/// Audience names are at most 128 characters (customerlist.md).
pub const MAX_NAME_CHARS: usize = 128;
/// A customer list's membership duration in days: -1 (no expiration) or 1 to 390
/// (customerlist.md); Microsoft's default when none is given is 30.
pub const MAX_MEMBERSHIP_DAYS: i32 = 390;

/// Microsoft's numeric error codes the connector acts on (operation-error-codes.md).
pub mod codes {
    /// An unidentified error: transient.
    pub const INTERNAL_ERROR: i64 = 0;
    /// The request had no body, or not the element the operation takes.
    pub const NULL_REQUEST: i64 = 100;
    /// The access token or the developer token is not valid for this environment.
    pub const INVALID_CREDENTIALS: i64 = 105;
    pub const USER_IS_NOT_AUTHORIZED: i64 = 106;
    pub const AUTHENTICATION_TOKEN_EXPIRED: i64 = 109;
    pub const REQUEST_MISSING_HEADERS: i64 = 116;
    /// Too many calls within the sliding minute: wait 60 seconds.
    pub const CALL_RATE_EXCEEDED: i64 = 117;
    pub const NOT_AUTHORIZED: i64 = 1001;
    pub const INVALID_AUDIENCE_ID: i64 = 4835;
    pub const INVALID_AUDIENCE_NAME: i64 = 4838;
    pub const INVALID_AUDIENCE_MEMBERSHIP_DURATION: i64 = 4842;
    pub const AUDIENCE_PARENT_ID_DOES_NOT_MATCH_SCOPE: i64 = 4843;
    pub const AUDIENCES_ARRAY_SHOULD_NOT_BE_NULL_OR_EMPTY: i64 = 4844;
    pub const INVALID_AUDIENCE_PARENT_ID: i64 = 4848;
    pub const DUPLICATE_AUDIENCE_NAME: i64 = 4853;
    pub const INVALID_AUDIENCE_TYPE: i64 = 4859;
    pub const BATCH_LIMIT_EXCEEDED: i64 = 6999;
    pub const INVALID_CUSTOMER_LIST_ID: i64 = 8000;
    pub const INVALID_CUSTOMER_LIST_ACTION_TYPE: i64 = 8001;
    pub const CUSTOMER_LIST_ITEM_SUB_TYPE_NOT_SUPPORTED: i64 = 8002;
    pub const CUSTOMER_LIST_TERMS_NOT_ACCEPTED: i64 = 8003;
    pub const EMAIL_MUST_BE_HASHED: i64 = 8004;
    pub const EITHER_EMAIL_OR_CRM_ID_SHOULD_BE_PROVIDED: i64 = 8006;
}
