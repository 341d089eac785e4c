//! Google Customer Match through the Data Manager API, the multi-step pattern: find or create
//! the user list, ingest (or remove) members in requests of at most 10,000, poll each request's
//! status, and for a full replace remove everything added before the run started
//! (`removeAll` with `removeAsOfTime`). The Ads API no longer takes new Customer Match users.

pub mod config;
pub mod request;
pub mod service;
pub mod sink;

pub const MAX_MEMBERS: usize = 10_000;
