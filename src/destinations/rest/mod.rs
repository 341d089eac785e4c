//! A generic REST endpoint, the single-step pattern: each batch is one request whose body is the
//! job's template rendered with the batch's members. Additions and removals may go to different
//! URLs or methods; which statuses mean done or try again is the job's to say. `config` is the
//! job-file section, `request` renders bodies, `service` reads statuses, `sink` runs the
//! pipeline.

pub mod config;
pub mod request;
pub mod service;
pub mod sink;
