//! The container image: deploy/image.sh builds it offline from the binary the tests built (no
//! second release build), twice to the same image id; both Containerfiles are hadolint clean;
//! run with podman and runc, with no network, a read-only root and user 65532, the image
//! answers `--version`, validates the demo job and runs it with its tables and output on
//! mounted volumes.
//!
//! It needs buildah, podman and runc (Debian packages). Where they are missing the test installs
//! them when it may (root with apt-get, as on CI); elsewhere it says SKIPPED, unless CI is set,
//! where a missing tool is a failure.

use crate::common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

const TAG: &str = "localhost/activator-test";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the container tools are there, installing them where the test may.
fn container_tools() -> bool {
    let tools = ["buildah", "podman", "runc"];
    if tools.iter().all(|t| have(t)) {
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root && have("apt-get") {
        let ok = Command::new("sh")
            .args(["-c", "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah podman runc >/dev/null"])
            .status()
            .is_ok_and(|s| s.success());
        if ok && tools.iter().all(|t| have(t)) {
            return true;
        }
    }
    assert!(
        std::env::var("CI").is_err(),
        "buildah, podman and runc are needed (apt-get install buildah podman runc)"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED the image test: buildah, podman and runc are not installed (apt-get install buildah podman runc)"
    );
    false
}

fn build_image() -> String {
    let out = Command::new(repo().join("deploy/image.sh"))
        .arg(env!("CARGO_BIN_EXE_activator"))
        .env("IMAGE_TAG", TAG)
        .output()
        .unwrap();
    assert!(out.status.success(), "deploy/image.sh: {}", text(&out));
    let id = Command::new("buildah")
        .args(["inspect", "--format", "{{.FromImageID}}", TAG])
        .output()
        .unwrap();
    assert!(id.status.success(), "{}", text(&id));
    String::from_utf8_lossy(&id.stdout).trim().to_string()
}

/// `podman run` as AWS Batch would run the image: no network, read-only root, the runtime that
/// works on these machines, and `volumes` as (host, container) pairs.
fn podman_run(volumes: &[(&Path, &str)], env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new("podman");
    c.args([
        "--runtime",
        "runc",
        "run",
        "--rm",
        "--network=none",
        "--read-only",
    ])
    .args([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    for (host, container) in volumes {
        c.arg("-v").arg(format!("{}:{container}", host.display()));
    }
    for (k, v) in env {
        c.arg("-e").arg(format!("{k}={v}"));
    }
    c.arg(TAG).args(args).output().unwrap()
}

#[test]
fn the_image_builds_reproducibly_offline_and_runs_the_demo_read_only_as_a_non_root_user() {
    if !container_tools() {
        return;
    }
    // hadolint: both Containerfiles clean.
    let hadolint = deploy_python().parent().unwrap().join("hadolint");
    for file in ["deploy/Containerfile", "deploy/Containerfile.scratch"] {
        let out = Command::new(&hadolint)
            .arg(repo().join(file))
            .output()
            .unwrap();
        assert!(out.status.success(), "hadolint {file}: {}", text(&out));
    }

    let first = build_image();
    let second = build_image();
    assert_eq!(first, second, "the same files give the same image id");

    let user = Command::new("podman")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{.Config.Entrypoint}}",
            TAG,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&user.stdout).trim(),
        "65532:65532 [/usr/local/bin/activator]"
    );

    let out = podman_run(&[], &[], &["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("activator"), "{}", text(&out));

    let testdata = repo().join("testdata");
    let out = podman_run(
        &[(&testdata, "/app/testdata:ro")],
        &[],
        &["validate", "jobs/demo.toml"],
    );
    assert!(out.status.success(), "{}", text(&out));

    // The demo, its output and state on a volume user 65532 may write, TMPDIR on podman's tmpfs.
    let volume = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        volume.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = podman_run(
        &[(&testdata, "/app/testdata:ro"), (volume.path(), "/out")],
        &[("DEMO_OUT", "/out/demo-out"), ("DEMO_STATE", "/out/state")],
        &["run", "jobs/demo.toml", "--date", "2026-11-25", "--quiet"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let export = volume.path().join("demo-out/demo-2026-11-25.parquet");
    assert!(export.is_file(), "{}", text(&out));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&export).unwrap().uid(),
        65532,
        "written as user 65532"
    );
    assert!(parquet_column(&export, "email_sha256").len() > 500);
}
