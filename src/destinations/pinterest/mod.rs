//! Pinterest customer lists (API v5; shared/spec/platforms-more.md §C), the single-step pattern
//! with a twist: Pinterest creates a list only with records, so the list is found by name under
//! the ad account, or created by the first batch that has records; every other batch is one
//! `PATCH /v5/ad_accounts/{id}/customer_lists/{list}` with `operation_type` `ADD` or `REMOVE`
//! and its `records` as one comma-separated string. A list has one kind (`list_type`): hashed
//! e-mails (`EMAIL`) or hashed mobile ad ids (`MAID`, `IDFA`). After an add, the list is made
//! targetable by a `CUSTOMER_LIST` audience (found, or created once) and its status is read
//! until Pinterest has matched it or a while has passed; `TOO_SMALL` (under 100 matched
//! Pinterest accounts) is reported, not an error. Pinterest documents no replace.
//!
//! `config` is the job-file section, `request` encodes batches, `service` reads Pinterest's
//! answers, `sink` runs the pipeline.

pub mod config;
pub mod request;
pub mod service;
pub mod sink;

/// Records per request: the spec has no figure ("not in spec (UNCONFIRMED; earlier third-party
/// 50 000)", platforms-more.md §C), so the third-party figure stands until Pinterest's is known.
pub const MAX_RECORDS: usize = 50_000;
/// A list takes one kind, so each member is at most one record: a batch of this many members
/// stays within `MAX_RECORDS`.
pub const MAX_ROWS: usize = MAX_RECORDS;
/// Pinterest's universal Standard-tier limit, 100 requests per second per user per app
/// (platforms-more.md §C, [PIN-RL]). The `ads_write` category that list updates count against
/// may be lower per minute (UNCONFIRMED: not captured); its 429s are retried.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 100.0;
/// A list needs this many matched Pinterest accounts to be targetable; below it Pinterest says
/// `TOO_SMALL` (platforms-more.md §C: "TOO_SMALL (<100 Pinterest users)").
pub const TARGETABLE_MATCHES: u64 = 100;
/// The largest `page_size` the API takes when listing (OpenAPI `query_page_size`: 1 to 250).
pub const PAGE_SIZE: usize = 250;
/// How long an add waits for Pinterest to finish matching the list, unless the job says; the
/// wait is for the report's sake, so it is short (matching may take Pinterest much longer).
pub const DEFAULT_STATUS_WAIT_SECONDS: u64 = 60;
/// The longest wait a job may ask for: a batch job should not sit for hours on a status.
pub const MAX_STATUS_WAIT_SECONDS: u64 = 3600;
/// Ad account and customer list ids are digits, at most 18 (OpenAPI `path_ad_account_id`,
/// `path_customer_list_id`: `^\d+$`, `maxLength: 18`).
pub const MAX_ID_DIGITS: usize = 18;
