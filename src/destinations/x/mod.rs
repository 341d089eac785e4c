//! X (Twitter) custom audiences (Ads API v12; shared/spec/platforms-more.md §F), the single-step
//! pattern: the custom audience is found by name in the ad account (`GET
//! /12/accounts/{id}/custom_audiences?q=…`) or created (`POST …/custom_audiences?name=…`, as X's
//! own SDK does), then each batch is one `POST …/custom_audiences/{id}/users` whose operations
//! all `Update` (add) or all `Delete` (remove). X has no replace.
//!
//! Three things set X apart:
//! - every call is signed with OAuth 1.0a (HMAC-SHA1, `oauth`): an app's consumer key and secret
//!   and a user's access token and token secret, four secret references; each try of a request
//!   is signed afresh, as X takes a nonce once;
//! - a batch succeeds or fails whole, and the answer's `success_count` and `total_count` must
//!   both equal the users sent: X says an answer that differs is "an error condition, requiring
//!   a retry". It is tried again (the operations are idempotent), and after `SHORT_COUNT_TRIES`
//!   answers that count short the run stops, naming the batch;
//! - X says how much of its rate window is left (`x-rate-limit-remaining`, `-reset` in epoch
//!   seconds): once it is spent, no request is sent before it resets.
//!
//! X matches each identifier of a user on its own (a user object "may carry several id types"),
//! so a user is sent with every identifier the job has of the kinds X takes (hashed e-mail, hashed
//! mobile ad id, and hashed phone when the job asks), and a mirror's removes leave out the
//! identifiers current members still hold, as for TikTok and Snap.
//!
//! `config` is the job-file section, `oauth` signs requests, `request` encodes batches, `service`
//! reads X's answers, `sink` runs the pipeline.

pub mod config;
pub mod oauth;
pub mod request;
pub mod service;
pub mod sink;

use std::time::Duration;

/// X's current Ads API version ("v12 current since 27 Oct 2022, no v13").
pub const API_VERSION: &str = "12";
/// Operations per users request: "The current maximum batch size is 2500 for this endpoint. The
/// batch size is determined by the number of operations (Update/Delete) per request".
pub const MAX_OPERATIONS: usize = 2_500;
/// Users per request. Each operation carries one user, so the batch size holds whether X counts
/// operations (its current page) or users (its earlier pages), and `success_count` is the same
/// number either way.
pub const MAX_USERS: usize = MAX_OPERATIONS;
/// "The max request POST body size this endpoint can accept is 5,000,000 bytes."
pub const MAX_BODY_BYTES: usize = 5_000_000;
/// The most one encoded operation takes: one user with an e-mail, a phone and a device id, each
/// one SHA-256 in hex, is 292 bytes and a comma.
pub const MAX_OPERATION_BYTES: usize = 300;
// A full batch fits X's body limit with room to spare, so batches are cut by users alone.
const _: () = assert!(MAX_USERS * MAX_OPERATION_BYTES + 2 <= MAX_BODY_BYTES);
/// "The rate limits for this endpoint are 1500 per 1 minute window": 25 a second.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 25.0;
/// Custom audiences per page when looking one up by name (`count`: 1 to 1,000).
pub const PAGE_SIZE: usize = 1_000;
/// The longest audience name activator looks up: the `q` filter takes 1 to 255 characters.
pub const MAX_NAME_CHARS: usize = 255;
/// X's ids (ad accounts `18ce54d4x5t`, custom audiences `1nmth`) are lowercase letters and digits;
/// the length is a sanity bound, not X's.
pub const MAX_ID_CHARS: usize = 32;
/// Answers counting fewer users than were sent, per batch, before the run stops.
pub const SHORT_COUNT_TRIES: u32 = 3;
/// The longest wait for a spent rate window to reset: X's windows are a minute for this
/// endpoint and 15 minutes for some others; a `x-rate-limit-reset` further away is not waited for
/// whole (the next answer says again).
pub const MAX_RESET_WAIT: Duration = Duration::from_secs(15 * 60);

/// The sandbox app's API key (`oauth_consumer_key`).
pub const SANDBOX_CONSUMER_KEY: &str = "sandbox-consumer-key";
/// The sandbox app's API secret. Characters `+`, `/` and `=` (as in X's Base64-like secrets)
/// make clients percent-encode it in the signing key.
pub const SANDBOX_CONSUMER_SECRET: &str = "sandbox+consumer/secret=";
/// The sandbox user's access token (`oauth_token`), in X's `{user id}-{token}` form.
pub const SANDBOX_ACCESS_TOKEN: &str = "1234567890-SandboxAccessToken";
pub const SANDBOX_ACCESS_TOKEN_SECRET: &str = "sandbox/token+secret=";
