//! Bad input: each mistake gives a clear error naming where it is, a non-zero exit code of the
//! right class, and nothing half-done at the destination.

use crate::common;

use common::*;
use std::path::Path;

const CONFIG_ERROR: i32 = 2;
const TRANSIENT_ERROR: i32 = 3;

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    /// A job over the demo data with `job_extra` appended and `sql` as its segment.
    fn new(job_extra: &str, sql: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("segment.sql"), sql).unwrap();
        let job = format!(
            r#"segment = "segment.sql"
profile = "meta"
[[tables]]
name = "customers"
url = "{repo}/testdata/demo/customers"
partitions = ["dt"]
{job_extra}
[[destinations]]
type = "export"
url = "out"
"#,
            repo = repo().display()
        );
        std::fs::write(dir.path().join("job.toml"), job).unwrap();
        Case { dir }
    }

    fn run(&self, env: &[(&str, String)]) -> (i32, String) {
        let out = activator()
            .arg("run")
            .arg(self.dir.path().join("job.toml"))
            .args(["--date", "2026-11-25", "--quiet"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn out_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("out")
    }
}

const SQL: &str =
    "SELECT email, phone, country, lifetime_value FROM customers WHERE dt = '{{ run_date }}'";
const IDS: &str = "[identifiers]\nemail = \"email\"\nphone = \"phone\"\ncountry = \"country\"\n";

fn assert_nothing_written(dir: &Path) {
    assert_eq!(
        files_below(dir),
        Vec::<String>::new(),
        "files left at the destination"
    );
}

#[test]
fn a_typo_in_the_job_file_names_file_line_and_key() {
    let case = Case::new(&format!("{IDS}defualt_region = \"US\"\n"), SQL);
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(text.contains("job.toml"), "{text}");
    assert!(text.contains("line"), "{text}");
    assert!(text.contains("defualt_region"), "{text}");
    assert_nothing_written(&case.out_dir());
}

#[test]
fn an_unknown_identifier_kind_lists_the_kinds() {
    let case = Case::new("[identifiers]\nemial = \"email\"\n", SQL);
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(text.contains("emial") && text.contains("email"), "{text}");
}

#[test]
fn a_sql_error_points_at_the_sql_file() {
    let case = Case::new(
        IDS,
        "SELECT email, phone, country FROM customers WHERE dt = '{{ run_date }}' AND",
    );
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(text.contains("segment.sql"), "{text}");
    assert_nothing_written(&case.out_dir());
}

#[test]
fn a_template_error_names_the_line() {
    let case = Case::new(
        IDS,
        "SELECT email, phone, country\nFROM customers\nWHERE dt = '{{ rundate }}'",
    );
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(text.contains("segment.sql:3"), "{text}");
}

#[test]
fn a_missing_table_is_named() {
    let case = Case::new(
        &format!("[[tables]]\nname = \"orders\"\nurl = \"/nonexistent/orders\"\n{IDS}"),
        SQL,
    );
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(
        text.contains("orders") && text.contains("/nonexistent/orders"),
        "{text}"
    );
}

#[test]
fn a_table_the_sql_does_not_know_is_named() {
    let case = Case::new(
        IDS,
        "SELECT email, phone, country FROM customer WHERE dt = '{{ run_date }}'",
    );
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(
        text.contains("segment.sql") && text.contains("customer"),
        "{text}"
    );
}

#[test]
fn a_non_string_identifier_column_is_named_with_its_type() {
    let case = Case::new("[identifiers]\nemail = \"lifetime_value\"\n", SQL);
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(text.contains("identifiers.email"), "{text}");
    assert!(
        text.contains("lifetime_value") && text.contains("Float64"),
        "{text}"
    );
    assert_nothing_written(&case.out_dir());
}

#[test]
fn a_column_the_segment_does_not_return_is_named() {
    let case = Case::new("[identifiers]\nemail = \"e_mail\"\n", SQL);
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(
        text.contains("e_mail") && text.contains("returns email, phone"),
        "{text}"
    );
}

#[test]
fn an_unset_variable_names_the_key_and_the_variable() {
    let case = Case::new(IDS, SQL);
    let job = std::fs::read_to_string(case.dir.path().join("job.toml"))
        .unwrap()
        .replace("url = \"out\"", "url = \"${NOT_SET_ANYWHERE}/out\"");
    std::fs::write(case.dir.path().join("job.toml"), job).unwrap();
    let (code, text) = case.run(&[]);
    assert_eq!(code, CONFIG_ERROR, "{text}");
    assert!(
        text.contains("destinations[0].url") && text.contains("NOT_SET_ANYWHERE"),
        "{text}"
    );
}

#[test]
fn a_failure_while_reading_leaves_no_file() {
    // The cast fails at execution time, after batches have started to flow.
    let case = Case::new(
        IDS,
        "SELECT email, phone, country FROM customers WHERE dt = '{{ run_date }}' AND CAST(email AS INT) > 0",
    );
    let (code, text) = case.run(&[]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("segment.sql"), "{text}");
    // The failed cast quotes the e-mail it failed on; the error must not.
    assert!(!text.contains('@'), "a raw value in the error: {text}");
    assert_nothing_written(&case.out_dir());
}

#[test]
fn errors_over_rows_with_quotes_and_line_breaks_show_no_value() {
    // Values that defeat any quoting rule: an apostrophe inside, double quotes, a line break.
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("people");
    std::fs::create_dir(&table).unwrap();
    std::fs::write(
        table.join("people.csv"),
        "email,born\n\
         o'brien.secret@example.com,1980-01-01\n\
         \"\"\"quoted\"\" hidden@example.com\",1981-02-02\n\
         \"two\nlines.private@example.com\",1982-03-03\n",
    )
    .unwrap();
    for sql in [
        "SELECT email FROM people WHERE CAST(email AS INT) > 0",
        "SELECT email FROM people WHERE make_date(2026, CAST(length(email) AS INT), 45) > DATE '2000-01-01'",
        "SELECT email FROM people WHERE to_timestamp(email) > now()",
    ] {
        std::fs::write(dir.path().join("segment.sql"), sql).unwrap();
        std::fs::write(
            dir.path().join("job.toml"),
            format!(
                "segment = \"segment.sql\"\nprofile = \"meta\"\n[[tables]]\nname = \"people\"\nurl = \"{}\"\n\
                 format = \"csv\"\n[identifiers]\nemail = \"email\"\n[[destinations]]\ntype = \"export\"\nurl = \"out\"\n",
                table.display()
            ),
        )
        .unwrap();
        let out = activator()
            .arg("run")
            .arg(dir.path().join("job.toml"))
            .args(["--date", "2026-11-25", "--quiet"])
            .output()
            .unwrap();
        let printed = text(&out);
        assert_eq!(out.status.code(), Some(CONFIG_ERROR), "{sql}: {printed}");
        assert!(printed.contains("segment.sql"), "{printed}");
        for secret in [
            "brien", "secret", "quoted", "hidden", "lines", "private", "example",
        ] {
            assert!(
                !printed.contains(secret),
                "{sql}: `{secret}` of a value in the error: {printed}"
            );
        }
        assert_nothing_written(&dir.path().join("out"));
    }
}

#[test]
fn an_unreachable_s3_endpoint_fails_fast_and_clearly() {
    let case = Case::new(IDS, SQL);
    let job = std::fs::read_to_string(case.dir.path().join("job.toml"))
        .unwrap()
        .replace(
            &format!("{}/testdata/demo/customers", repo().display()),
            "s3://lake/customers",
        );
    std::fs::write(case.dir.path().join("job.toml"), job).unwrap();
    let port = free_port(); // nothing listens there
    let started = std::time::Instant::now();
    let (code, text) = case.run(&[
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("ACTIVATOR_S3_MAX_RETRIES", "1".into()),
        ("ACTIVATOR_S3_RETRY_TIMEOUT_SECS", "3".into()),
    ]);
    assert_eq!(code, TRANSIENT_ERROR, "{text}");
    assert!(
        text.contains("customers") && text.contains("s3://lake/customers"),
        "{text}"
    );
    assert!(text.contains("AWS_ENDPOINT_URL"), "{text}");
    assert!(started.elapsed().as_secs() < 60);
    assert_nothing_written(&case.out_dir());
}

#[test]
fn raw_identifiers_never_reach_the_output_or_logs() {
    let case = Case::new(
        IDS,
        "SELECT email, phone, country FROM customers WHERE dt = '{{ run_date }}'",
    );
    let (code, text) = case.run(&[("ACTIVATOR_LOG", "debug".into())]);
    assert_eq!(code, 0, "{text}");
    let raw = parquet_column(
        &repo().join("testdata/demo/customers/dt=2026-11-25/part-00000.parquet"),
        "email",
    );
    let mut checked = 0;
    for email in raw.iter().flatten().filter(|e| e.contains('@')) {
        let email = email.trim();
        assert!(!text.contains(email), "raw e-mail in the output");
        checked += 1;
    }
    assert!(checked > 1000);
    let exported = std::fs::read(case.out_dir().join("job-2026-11-25.parquet")).unwrap();
    let exported = String::from_utf8_lossy(&exported);
    for email in raw.iter().flatten().filter(|e| e.contains('@')).take(200) {
        assert!(!exported.contains(email.trim()), "raw e-mail in the export");
    }
}
