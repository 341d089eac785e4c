//! The integration tests, one module per file beside this one, built as one test binary: each
//! binary links the whole crate and its dependencies, and twenty-two of them took longer to link
//! than many of their tests took to run. `cargo test --test integration meta::` runs one file's
//! tests.

#[macro_use]
mod common;

mod bad_input;
mod cli;
mod cluster;
mod google;
mod hostile_network;
mod identifiers;
mod image;
mod least_privilege;
mod linkedin;
mod meta;
mod microsoft;
mod official_normalizers;
mod pinterest;
mod rest;
mod run_export;
mod snap;
mod stack;
mod stack_moto;
mod sync;
mod tiktok;
mod ttd;
mod x;
