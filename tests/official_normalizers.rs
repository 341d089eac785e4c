//! The platforms' official normalizers as references, value by value: every distinct e-mail,
//! phone and name of the generated data (5,000 customers, three days), variants of them and
//! hand-made hostile values go through `activator hash` and through Google's Data Manager
//! library (`google-ads-datamanager-util`, its `Formatter`) for the google profile and The Trade
//! Desk's `uid2-client` for uid2 (both pinned in tests/requirements.txt). Where both accept a
//! value the hashes must be the same, and what activator accepts the official one must accept;
//! the deviations the spec documents are handled, each by name, in tests/official/compare.py.

use crate::common;

use common::*;
use std::process::Command;

fn compare_with_official(profile: &str) {
    let data = generated_data(5_000, 3);
    let out = Command::new(python())
        .arg(repo().join("tests/official/compare.py"))
        .arg(env!("CARGO_BIN_EXE_activator"))
        .arg(&data)
        .args(["--profile", profile])
        .output()
        .expect("run tests/official/compare.py");
    let printed = text(&out);
    println!("{printed}");
    assert!(
        out.status.success(),
        "the {profile} profile differs from the official normalizer (exit {:?}):\n{printed}",
        out.status.code()
    );
}

#[test]
fn google_profile_hashes_as_googles_formatter() {
    compare_with_official("google");
}

#[test]
fn uid2_profile_hashes_as_the_uid2_sdk() {
    compare_with_official("uid2");
}
