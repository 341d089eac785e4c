//! The `validate`, `hash` and `sandbox` commands.

use crate::common;

use common::*;

#[test]
fn validate_plans_every_job_in_jobs() {
    let out = run_ok(activator().arg("validate").args(["--date", "2026-11-25"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for job in ["demo", "bench_b1", "bench_b1_meta", "bench_b1_google"] {
        assert!(stdout.contains(&format!("ok jobs/{job}.toml")), "{stdout}");
    }
    assert!(stdout.contains("email Utf8"), "{stdout}");
}

#[test]
fn validate_fails_on_a_bad_job_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad.toml");
    std::fs::write(
        &job,
        "segment = \"nope.sql\"\nprofile = \"meta\"\n[identifiers]\nemail = \"email\"\n",
    )
    .unwrap();
    let out = activator().arg("validate").arg(&job).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(t.contains("bad.toml") && t.contains("nope.sql"), "{t}");
}

#[test]
fn hash_shows_normalization_and_hash_as_json_lines() {
    let out = run_ok(activator().args([
        "hash",
        "--profile",
        "google",
        "--kind",
        "email",
        " John.Smith+news@GMail.com",
        "n/a",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["normalized"], "johnsmith@gmail.com");
    assert_eq!(lines[0]["profile"], "google");
    assert_eq!(
        lines[0]["hash"].as_str().unwrap(),
        activator::identity::hash::hash_to_string(
            "johnsmith@gmail.com",
            activator::identity::Encoding::Hex
        )
    );
    assert_eq!(lines[1]["invalid"], "shape");

    let out = run_ok(activator().args([
        "hash",
        "--profile",
        "meta",
        "--kind",
        "phone",
        "--country",
        "GB",
        "020 7946 0958",
    ]));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["normalized"], "442079460958");

    let out = run_ok(activator().args([
        "hash",
        "--profile",
        "uid2",
        "--kind",
        "email",
        "validate@example.com",
    ]));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["hash"], "ntI244ZRTXwAwpki6/M5cyBYW7h/Wq576lnN3l9+W/c=");
}

#[test]
fn unknown_profile_is_a_usage_error() {
    let out = activator()
        .args(["hash", "--profile", "tiktok", "--kind", "email", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("meta, google or uid2"));
}

/// `activator sandbox` throttles each platform by the limits its flags set: past Snap's
/// requests per second an HTTP 429, past TikTok's a code 40100 inside HTTP 200.
#[test]
fn sandbox_flags_set_each_platforms_request_rate() {
    let port = free_port();
    let mut sandbox = activator()
        .args(["sandbox", "--port", &port.to_string()])
        .args([
            "--snap-requests-per-second",
            "1",
            "--tiktok-requests-per-second",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(async {
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        while client
            .get(format!("{url}/_sandbox/stats"))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed().as_secs() < 30,
                "the sandbox did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // On Linux with glibc, it serves from the same process started again with huge pages
        // (unless glibc's tunables were set for it).
        if cfg!(all(target_os = "linux", target_env = "gnu"))
            && std::env::var_os("GLIBC_TUNABLES").is_none()
        {
            let environ = std::fs::read(format!("/proc/{}/environ", sandbox.id())).unwrap();
            assert!(
                environ
                    .split(|&b| b == 0)
                    .any(|v| v == b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1"),
                "the sandbox was not started again with huge pages"
            );
        }
        let mut results = vec![];
        for _ in 0..3 {
            let snap = client
                .get(format!("{url}/v1/adaccounts/1/segments"))
                .bearer_auth("t")
                .send()
                .await
                .unwrap();
            let tiktok: serde_json::Value = client
                .get(format!(
                    "{url}/open_api/v1.3/dmp/custom_audience/list/?advertiser_id=1"
                ))
                .header("Access-Token", "t")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            results.push((snap.status().as_u16(), tiktok["code"].as_u64()));
        }
        results
    });
    sandbox.kill().unwrap();
    let _ = sandbox.wait();
    assert_ne!(results[0].0, 429, "{results:?}");
    assert_ne!(results[0].1, Some(40100), "{results:?}");
    // Within a second of the first (of the second, should the machine stall a second between).
    assert!(results[1..].iter().any(|r| r.0 == 429), "{results:?}");
    assert!(
        results[1..].iter().any(|r| r.1 == Some(40100)),
        "{results:?}"
    );
}

#[test]
fn an_array_child_runs_the_start_date_plus_its_index_for_export_jobs_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.sql"),
        "SELECT email FROM customers WHERE dt = '{{ run_date }}'",
    )
    .unwrap();
    let job = |extra: &str| {
        let path = dir.path().join("job.toml");
        std::fs::write(
            &path,
            format!(
                "name = \"arr\"\nsegment = \"s.sql\"\nprofile = \"meta\"\n[[tables]]\nname = \"customers\"\n\
                 url = \"{}/testdata/demo/customers\"\npartitions = [\"dt\"]\n[identifiers]\nemail = \"email\"\n\
                 [[destinations]]\ntype = \"export\"\nurl = \"out\"\n{extra}",
                repo().display()
            ),
        )
        .unwrap();
        path
    };
    let out = activator()
        .arg("run")
        .arg(job(""))
        .args(["--array-start", "2026-11-24", "--quiet"])
        .env("AWS_BATCH_JOB_ARRAY_INDEX", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        dir.path().join("out/arr-2026-11-25.parquet").is_file(),
        "{}",
        text(&out)
    );

    // Without the index, or for a job with a platform audience: a clear refusal.
    let out = activator()
        .arg("run")
        .arg(job(""))
        .args(["--array-start", "2026-11-24"])
        .env_remove("AWS_BATCH_JOB_ARRAY_INDEX")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("AWS_BATCH_JOB_ARRAY_INDEX"),
        "{}",
        text(&out)
    );
    let meta = "[[destinations]]\ntype = \"meta\"\nad_account_id = \"1\"\naudience = \"a\"\naccess_token = \"env:T\"\nbase_url = \"sandbox\"\n";
    let out = activator()
        .arg("run")
        .arg(job(meta))
        .args(["--array-start", "2026-11-24"])
        .env("AWS_BATCH_JOB_ARRAY_INDEX", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("only export"), "{}", text(&out));
}
