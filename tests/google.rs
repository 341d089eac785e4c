//! The Google Data Manager connector against the sandbox: the user list ends with exactly the
//! exported members, requests respect the limits, replace removes who left, faults are retried.

use crate::common;

use activator::sandbox::faults::FaultConfig;
local_fixture!();
use common::*;
use std::collections::BTreeSet;

const TOKEN: &str = "ya29.test-token-91ab";

impl Fixture {
    fn run(&self, min_value: u32, google: &str) -> (i32, String) {
        let job = format!(
            r#"segment = "{repo}/sql/b1.sql"
profile = "google"
[vars]
min_value = {min_value}
[[tables]]
name = "customers"
url = "{repo}/testdata/demo/customers"
partitions = ["dt"]
[identifiers]
email = "email"
phone = "phone"
first_name = "first_name"
last_name = "last_name"
zip = "zip"
country = "country"
[consent]
ad_user_data = "marketing_consent"
[[destinations]]
type = "export"
url = "{out}"
[[destinations]]
type = "google"
account_id = "123-456-7890"
access_token = "env:GOOGLE_ACCESS_TOKEN"
base_url = "{url}"
consent = {{ ad_user_data = "granted", ad_personalization = "granted" }}
batch = {{ max_rows = 300 }}
{google}
"#,
            repo = repo().display(),
            out = self.dir.path().join("out").display(),
            url = self.sandbox.url,
        );
        let sql_with_consent = std::fs::read_to_string(repo().join("sql/b1.sql"))
            .unwrap()
            .replace(
                "SELECT customer_id,",
                "SELECT customer_id, marketing_consent,",
            );
        std::fs::write(self.dir.path().join("b1.sql"), sql_with_consent).unwrap();
        let job = job.replace(
            &format!("{}/sql/b1.sql", repo().display()),
            &self.dir.path().join("b1.sql").display().to_string(),
        );
        std::fs::write(self.dir.path().join("job.toml"), job).unwrap();
        let out = activator()
            .arg("run")
            .arg(self.dir.path().join("job.toml"))
            .args(["--date", "2026-11-25", "--quiet"])
            .env("GOOGLE_ACCESS_TOKEN", TOKEN)
            .env("ACTIVATOR_LOG", "debug")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn list_emails(&self, name: &str) -> BTreeSet<String> {
        let store = &self.sandbox.state.store;
        let a = store
            .list()
            .into_iter()
            .find(|a| a.name == name)
            .expect("user list exists");
        store
            .members(&a.id)
            .unwrap()
            .iter()
            .filter_map(|m| m["emailAddress"].as_str().map(str::to_string))
            .collect()
    }
}

#[test]
fn ingest_creates_the_list_with_exactly_the_exported_members() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run(100, "user_list = \"b1\"");
    assert_eq!(code, 0, "{out}");
    let exported = f.exported_emails();
    assert!(exported.len() > 500);
    assert_eq!(f.list_emails("b1"), exported);
    let stats = f.sandbox.state.store.stats();
    assert!(stats.max_rows_per_request <= 300, "{stats:?}");
    assert!(out.contains("match rate"), "{out}");
    assert!(!out.contains(TOKEN));
}

#[test]
fn replace_removes_members_who_left_the_segment() {
    let f = Fixture::with_faults(FaultConfig::default());
    assert_eq!(f.run(50, "user_list = \"r\"").0, 0);
    let wide = f.list_emails("r");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (code, out) = f.run(
        200,
        "user_list = \"r\"\noperation = \"replace\"\nreplace_clock_margin_secs = 0",
    );
    assert_eq!(code, 0, "{out}");
    let narrow = f.exported_emails();
    assert!(narrow.len() < wide.len());
    assert_eq!(f.list_emails("r"), narrow);
}

#[test]
fn remove_takes_members_out() {
    let f = Fixture::with_faults(FaultConfig::default());
    assert_eq!(f.run(100, "user_list = \"x\"").0, 0);
    assert_eq!(f.run(100, "user_list = \"x\"\noperation = \"remove\"").0, 0);
    assert!(f.list_emails("x").is_empty());
}

#[test]
fn with_faults_every_member_arrives() {
    let f = Fixture::with_faults(FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        drop_rate: 0.1,
        seed: 3,
        // The user list is created, and the answer saying so is lost.
        once: create_answer_lost("/userLists"),
        ..Default::default()
    });
    let (code, out) = f.run(100, "user_list = \"flaky\"\nconcurrency = 3");
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.list_emails("flaky"), f.exported_emails());
    let stats = f.sandbox.state.store.stats();
    assert!(stats.injected_errors + stats.injected_throttles + stats.injected_drops > 0);
    // Created once, though the first create was applied and its answer lost.
    assert!(f.targeted_faults_spent());
    let store = &f.sandbox.state.store;
    assert_eq!(
        store
            .list()
            .iter()
            .filter(|a| a.platform == "google")
            .count(),
        1
    );
}

#[test]
fn an_unknown_user_list_stops_the_run() {
    let f = Fixture::with_faults(FaultConfig::default());
    let (code, out) = f.run(100, "user_list_id = \"404\"");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("product_destination_id"), "{out}");
}

/// The sandbox validates `audienceMembers:ingest` as the Data Manager does, wherever the
/// request's fields come in its body: the first invalid member is named, in the request's
/// encoding; an unknown consent status is refused; hex is kept in lower case and base64 as sent.
#[test]
fn the_sandbox_validates_ingest_requests_in_their_encoding() {
    let f = Fixture::with_faults(FaultConfig::default());
    let list = f
        .sandbox
        .state
        .store
        .create("google", "1234567890", "validation");
    let url = format!("{}/v1/audienceMembers:ingest", f.sandbox.url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send_text = |body: String| -> (u16, serde_json::Value) {
        rt.block_on(async {
            let response = reqwest::Client::new()
                .post(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json().await.unwrap())
        })
    };
    let send = |body: serde_json::Value| send_text(body.to_string());
    let email =
        |v: &str| serde_json::json!({"userData": {"userIdentifiers": [{"emailAddress": v}]}});
    let (hex, base64) = (
        "AB".repeat(32),
        "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
    );
    // Members first, as serde_json orders an object's keys: the encoding is read after them.
    let request = |members: Vec<serde_json::Value>, encoding: serde_json::Value| {
        serde_json::json!({
            "audienceMembers": members,
            "consent": {"adUserData": "CONSENT_GRANTED", "adPersonalization": 1},
            "destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                              "productDestinationId": list.id}],
            "encoding": encoding,
            "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"},
        })
    };
    let field = |error: &serde_json::Value| {
        error["error"]["details"][0]["fieldViolations"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let (status, error) = send(request(vec![email(&hex), email(base64)], "HEX".into()));
    assert_eq!(status, 400, "{error}");
    assert_eq!(field(&error), "audience_members[1].user_data.email_address");
    let (status, error) = send(request(vec![email(&hex), email(base64)], "BASE64".into()));
    assert_eq!(status, 400, "{error}");
    assert_eq!(field(&error), "audience_members[0].user_data.email_address");
    // The encoding before the members this time: the same verdict.
    let encoding_first = format!(
        r#"{{"encoding":"BASE64","termsOfService":{{"customerMatchTermsOfServiceStatus":"ACCEPTED"}},"destinations":[{{"operatingAccount":{{"accountType":"GOOGLE_ADS"}},"productDestinationId":"{}"}}],"audienceMembers":[{},{}]}}"#,
        list.id,
        email(&hex),
        email(base64)
    );
    let (status, error) = send_text(encoding_first);
    assert_eq!(status, 400, "{error}");
    assert_eq!(field(&error), "audience_members[0].user_data.email_address");

    let mut unknown_consent = email(&hex);
    unknown_consent["consent"] = serde_json::json!({"adUserData": "MAYBE"});
    let (status, error) = send(request(vec![email(&hex), unknown_consent], "HEX".into()));
    assert_eq!(status, 400, "{error}");
    assert_eq!(field(&error), "consent[2].adUserData");

    let (status, ok) = send(request(vec![email(&hex)], "HEX".into()));
    assert_eq!(status, 200, "{ok}");
    let (status, ok) = send(request(vec![email(base64)], 2.into()));
    assert_eq!(status, 200, "{ok}");
    let emails: BTreeSet<String> = f
        .sandbox
        .state
        .store
        .members(&list.id)
        .unwrap()
        .iter()
        .map(|m| m["emailAddress"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        emails,
        BTreeSet::from([hex.to_lowercase(), base64.to_string()])
    );
}
