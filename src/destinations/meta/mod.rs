//! Meta Custom Audiences (customer file), the multi-step pattern: find or create the audience,
//! open a session, send batches (`batch_seq` from 1, `last_batch_flag` on the last), read the
//! counts back. `config` is the job-file section, `request` encodes batches as the Graph API's
//! multi-key payload, `service` reads its answers, `sink` runs the pipeline.

pub mod config;
pub mod request;
pub mod service;
pub mod sink;

/// Rows per request the Graph API accepts.
pub const MAX_ROWS: usize = 10_000;
