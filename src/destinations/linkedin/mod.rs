//! LinkedIn Matched Audiences: DMP segments of users (shared/spec/platforms-more.md §A), the
//! single-step pattern: find the segment among the ad account's (the account finder) or create
//! it (`POST /rest/dmpSegments`, its id in `x-restli-id`), then each batch is one
//! `BATCH_CREATE` of `POST /rest/dmpSegments/{id}/users` whose elements all `ADD` or all
//! `REMOVE` one member each. LinkedIn has no replace. `config` is the job-file section,
//! `request` encodes batches, `service` reads LinkedIn's answers, `sink` runs the pipeline.
//!
//! Company segments (`/companies`: name, domain, page URL) are not built: activator's members
//! are people, and no identifier kind of a job holds a company.

pub mod config;
pub mod request;
pub mod service;
pub mod sink;

use std::time::Duration;

/// Elements per BATCH_CREATE: 5,000 (Segment's "LinkedIn accepts up to 5000 per request" and
/// RudderStack's `MAX_BATCH_SIZE` agree; LinkedIn's own statement was not retrieved, so
/// UNCONFIRMED).
pub const MAX_ELEMENTS: usize = 5_000;

/// LinkedIn limits the users endpoint to 500 requests a minute per member (the 2023-2024
/// versioned pages; current numbers UNCONFIRMED) besides unpublished daily quotas; 8 a second
/// stays under the minute's.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 8.0;

/// The least wait before the users call is tried again after a 404: a segment LinkedIn has just
/// created is not found for some seconds (the pages say to wait 5, older ones 10 to 15). With
/// the default eight attempts a retried call waits at least 21 seconds in all.
pub const NOT_READY_WAIT: Duration = Duration::from_secs(3);

/// How long after this phase created a segment a 404 from its users call still means "not
/// ready yet"; after it, and for any segment the phase did not create, a 404 is permanent.
pub const NOT_READY_FOR: Duration = Duration::from_secs(60);
