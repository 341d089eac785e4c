//! `activator stack` in moto: the template of the repository's jobs (with s3:// URLs from their
//! variables, as tests/stack.rs makes it) is created by moto's CloudFormation in process, the
//! services then hold what it says (KMS key, state bucket, image repository, log group, roles,
//! AWS Batch's compute environments, queue and job definitions), and each job definition takes
//! a `submit_job` that ends SUCCEEDED (moto's Batch without Docker does not run the image).
//!
//! tests/stack_moto.py does the work and prints a line per check and per concession to moto:
//! the resource types its CloudFormation ignores (alarms, schedules, the bucket and topic
//! policies, the e-mail subscription), the properties it drops, and the template patches made
//! in memory for its bugs (the template is never changed on disk).

use crate::common;

use common::*;
use std::process::Command;

#[test]
fn the_template_creates_in_moto_and_its_jobs_run() {
    // `activator()` is env!("CARGO_BIN_EXE_activator") run from the repository.
    let out = run_ok(
        activator()
            .arg("stack")
            .args(REPOSITORY_JOBS.iter().map(|j| repo().join(j)))
            .envs(S3_URLS)
            .env_remove("SYNC_MODE"),
    );
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("activator.yaml");
    std::fs::write(&template, &out.stdout).unwrap();
    // The template as YAML 1.2 reads it, for the script to compare with PyYAML's (YAML 1.1)
    // reading, which moto's and its own are.
    let read: serde_json::Value = yaml_serde::from_slice(&out.stdout).unwrap();
    let as_json = dir.path().join("activator.json");
    std::fs::write(&as_json, read.to_string()).unwrap();

    let out = Command::new(python())
        .arg(repo().join("tests/stack_moto.py"))
        .arg(&template)
        .arg(&as_json)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let printed = text(&out);
    println!("{printed}");
    assert!(
        out.status.success(),
        "tests/stack_moto.py failed (exit {:?}):\n{printed}",
        out.status.code()
    );
    assert!(printed.contains("checks passed"), "{printed}");
    for line in [
        "stack activator created",
        "repository Repository: scan on push",
        "demo: submitted to the queue with date=2026-11-25",
        "bench_b1_google: submitted to the queue with date=2026-11-25",
    ] {
        assert!(printed.contains(line), "no line {line:?} in:\n{printed}");
    }
}
