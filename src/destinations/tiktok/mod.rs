//! TikTok custom audiences (API for Business v1.3), the file-based multi-step pattern
//! (shared/spec/platforms.md §3): find the audience by name, upload each batch as a file of
//! hashes with its MD5 signature, then create the audience from the files or update it with an
//! explicit `APPEND`, `REMOVE` or `REPLACE`. `config` is the job-file section, `request` writes
//! the files and bodies, `service` reads the `code` inside TikTok's HTTP 200 answers, `sink` runs
//! the pipeline.

pub mod config;
pub mod request;
pub mod service;
pub mod sink;

/// One file line: 64 hex characters and a newline.
pub const LINE_BYTES: usize = 65;
/// TikTok's file size limit for API uploads is UNCONFIRMED; 50 MB per file is the documented
/// integration limit (Treasure Data), the most likely one.
pub const MAX_FILE_BYTES: usize = 50_000_000;
/// Members per file: as many lines as fit in a file.
pub const MAX_ROWS: usize = MAX_FILE_BYTES / LINE_BYTES;
/// The spec recommends fewer than 50 `file_paths` per create or update call.
pub const MAX_FILES_PER_CALL: usize = 49;
/// App-level QPS depends on the app's tier (20 for "Advanced"); half of that suits lower tiers.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 10.0;
/// `custom_audience_name` is at most 128 characters.
pub const MAX_NAME_CHARS: usize = 128;
