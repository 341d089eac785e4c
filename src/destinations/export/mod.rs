//! The export destination: hashed members as Parquet, CSV or NDJSON files in any object store,
//! the file drop that managed integrations (AWS Clean Rooms, Amazon Ads, an SFTP bridge) pick up.
//!
//! `config` checks the job file's table, `encoder` turns batches into file bytes, `writer` puts
//! one file in the store atomically (`crate::direct`: local files past the page cache), and
//! `sink` runs the pipeline: batched, encoded, written, committed.

pub mod config;
pub mod encoder;
pub mod sink;
pub mod writer;
