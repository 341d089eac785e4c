//! The Trade Desk with UID2 or EUID (shared/spec/platforms-more.md §B2 and §B3): TTD's data API
//! takes no e-mail or phone, hashed or not, so members go in two steps.
//!
//! 1. The UID2 operator's `POST /v3/identity/map` maps each e-mail and phone hash (Base64
//!    SHA-256, as the uid2 profile writes them) to a raw UID2: at most 5,000 identifiers a
//!    request, one request at a time (the operator asks for no parallel batches, so every map
//!    request of the process to one operator waits its turn), each sealed in the envelope of
//!    `envelope` with the client secret. Opted-out and invalid identifiers are counted, not sent.
//! 2. TTD's `POST /data/advertiser` takes the UID2s as items of the advertiser's first-party
//!    segment (`Data: [{Name, TtlInMinutes}]`); removal is the same item with `TtlInMinutes: 0`.
//!    Refused items come back as `FailedLines` inside an HTTP 200: counted (masked samples), not
//!    sent again, except codes about the request as a whole (an unknown advertiser, a segment
//!    name too long), which stop the run.
//!
//! A UID2 changes when the operator refreshes it (about 1/365 of them a day), and activator
//! keeps no UID2: each batch is mapped as it is sent (a resumed batch again), so a UID2 is
//! never used past the refresh time its mapping gave. A removal maps the removed identifiers
//! again and sends TTL 0 for the current UID2 and for the previous one the operator names (for
//! 90 days after a refresh), so a member added under the old UID2 is removed too.
//!
//! `config` is the job-file section, `envelope` the operator's encryption, `request` the
//! bodies, `service` reads the answers, `sink` runs the pipeline.

pub mod config;
pub mod envelope;
pub mod request;
pub mod service;
pub mod sink;

/// Identifiers per identity-map request (platforms-more.md §B3: "≤5 000 items per batch").
pub const MAX_MAP_ITEMS: usize = 5_000;
/// Members per batch: at most two identifiers each (an e-mail and a phone), so a batch is one
/// identity-map request, and its data request (a removal sends the previous UID2 too: at most
/// 10,000 items) stays near a megabyte.
pub const MAX_ROWS: usize = MAX_MAP_ITEMS / 2;
/// The largest data request activator sends. TTD publishes no maximum (a larger request is
/// refused with 413 MaxRequestSizeExceeded); RudderStack cuts at 2.5 MB, this stays below it.
pub const MAX_DATA_REQUEST_BYTES: usize = 2_000_000;
/// Days a member stays in the segment unless sent again: RudderStack's default, 30 days.
pub const DEFAULT_TTL_DAYS: u32 = 30;
/// RudderStack's maximum, 180 days (TTD's own is UNCONFIRMED).
pub const MAX_TTL_DAYS: u32 = 180;
pub const MINUTES_PER_DAY: u32 = 1_440;
/// Advertiser ids are TTD's short alphanumeric ids (`abc1234`); this bounds what is taken.
pub const MAX_ADVERTISER_ID_CHARS: usize = 32;
/// The sandbox operator's client secret unless `activator sandbox --uid2-client-secret` says
/// otherwise: the Base64 of the 32 bytes `activator-sandbox-client-secret!`. An in-process
/// sandbox (`uid2_base_url = "sandbox"`) is sealed with it when the job's reference is not set.
pub const SANDBOX_CLIENT_SECRET: &str = "YWN0aXZhdG9yLXNhbmRib3gtY2xpZW50LXNlY3JldCE=";
/// The e-mail and the phone the UID2 operators answer as opted out, as UID2's integration
/// environment does (the uid2-client SDK's integration tests map them and expect `optout`).
pub const OPTED_OUT_EMAIL: &str = "optout@example.com";
pub const OPTED_OUT_PHONE: &str = "+00000000000";
