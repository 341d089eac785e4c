//! activator: pushes customer segments, as hashed identifiers, to advertising platforms.
//!
//! A run reads tables with DataFusion (`segment`), normalizes and hashes identifiers over Arrow
//! arrays (`identity`), drops duplicates (`members`), cuts platform-sized batches (`batch`) and
//! hands them to destinations (`destinations`), then reports (`report`). `job` parses job files,
//! `storage` maps URLs to object stores, `run` and `validate` are the commands.

pub mod batch;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod cpu;
pub mod destinations;
pub mod direct;
pub mod error;
pub mod identity;
pub mod job;
pub mod json;
pub mod members;
pub mod memory;
pub mod report;
pub mod resolve;
pub mod run;
pub mod sandbox;
pub mod scratch;
pub mod segment;
pub mod shutdown;
pub mod stack;
pub mod state;
pub mod storage;
pub mod upload;
pub mod validate;

pub use error::{Error, ErrorClass, Result};
