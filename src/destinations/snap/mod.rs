//! Snap customer lists (Marketing API v1 segments; shared/spec/platforms.md §4), the
//! single-step pattern: find or create the segment under the ad account, then each batch is one
//! `POST` (add) or `DELETE` (remove) of `/segments/{id}/users` with one `users` element per
//! identifier schema. Snap documents no replace. `config` is the job-file section, `request`
//! encodes batches, `service` reads Snap's answers, `sink` runs the pipeline.

pub mod config;
pub mod request;
pub mod service;
pub mod sink;

/// Identifiers per request: 100,000 (Segment's "maximum allowed by Snap"; the official page
/// text was not retrieved, so UNCONFIRMED but likely).
pub const MAX_IDENTIFIERS: usize = 100_000;
/// A member carries up to three identifiers (e-mail, phone, mobile ad id), so a batch of this
/// many members stays within the limit.
pub const MAX_ROWS: usize = MAX_IDENTIFIERS / 3;
/// Snap allows 10 requests per second on average per access token (20 per app).
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 10.0;
/// Segment names are at most 375 characters.
pub const MAX_NAME_CHARS: usize = 375;
