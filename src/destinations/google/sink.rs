//! The Data Manager pipeline: user list found or created; members batched (≤ 10,000), encoded
//! and sent with up to `concurrency` requests in flight within the per-minute quota; every
//! request's status polled; for a replace, `removeAll` as of the run's start once every ingest
//! has been processed.

use super::config::GoogleConfig;
use super::request::{self, MemberEncoder};
use super::service;
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service, Verdict};
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Api {
    service: Service,
    root: String,
    token: secrets::Secret,
    login: Option<String>,
}

impl Api {
    async fn get(&self, what: &str, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}/{path}", self.root);
        self.service
            .call(
                what,
                |c| self.auth(c.get(&url).query(query)),
                service::classify,
            )
            .await
    }

    async fn post(&self, what: &str, path: &str, body: &Value) -> Result<Value> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::internal(e.to_string()))?;
        self.post_bytes(what, path, bytes.into()).await
    }

    /// A JSON body built once and shared by every try.
    async fn post_bytes(&self, what: &str, path: &str, bytes: bytes::Bytes) -> Result<Value> {
        let url = format!("{}/{path}", self.root);
        self.service
            .call(
                what,
                |c| {
                    self.auth(c.post(&url))
                        .header("content-type", "application/json")
                        .body(bytes.clone())
                },
                service::classify,
            )
            .await
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let r = r.bearer_auth(self.token.expose());
        match &self.login {
            Some(l) => r.header("login-account", l),
            None => r,
        }
    }

    /// The id of the user list named `name`, created if there is none, and never twice: a
    /// create whose answer was lost is looked up before it is tried again.
    async fn find_or_create(&self, config: &GoogleConfig, name: &str) -> Result<String> {
        let path = format!(
            "v1/accountTypes/{}/accounts/{}/userLists",
            config.account_type, config.account_id
        );
        let url = format!("{}/{path}", self.root);
        let body = json!({
            "displayName": name,
            "description": "Managed by activator",
            "membershipStatus": "OPEN",
            "ingestedUserListInfo": {"uploadKeyTypes": ["CONTACT_ID"]},
        });
        self.service
            .find_or_create(
                "create user list",
                || self.find(&path, name),
                |c| self.auth(c.post(&url)).json(&body),
                |status, headers, answer| match service::classify(status, headers, answer) {
                    Verdict::Done(v) => match list_id(&v) {
                        Ok(id) => Verdict::Done(id),
                        Err(e) => Verdict::Fail(e.to_string()),
                    },
                    other => other.map(|_| String::new()),
                },
            )
            .await
    }

    /// The id of the user list named `name` under `path`, if there is one.
    async fn find(&self, path: &str, name: &str) -> Result<Option<String>> {
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![("pageSize", "1000")];
            if let Some(t) = &page_token {
                query.push(("pageToken", t.as_str()));
            }
            let page = self.get("list user lists", path, &query).await?;
            if let Some(found) = page["userLists"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["displayName"].as_str() == Some(name))
            {
                return Ok(Some(list_id(found)?));
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => page_token = Some(t.to_string()),
                _ => return Ok(None),
            }
        }
    }
}

fn list_id(v: &Value) -> Result<String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            v["name"]
                .as_str()
                .and_then(|n| n.rsplit('/').next())
                .map(str::to_string)
        })
        .ok_or_else(|| Error::transient("google: the answer carries no user list id"))
}

pub async fn run(
    config: &GoogleConfig,
    run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    let phase = op.phase();
    let checkpoint = delivery.checkpoint.clone();
    let key = format!("destination {}", config.name);
    let token =
        secrets::platform_token(&config.access_token, &key, config.in_process_sandbox).await?;
    let service = Service::new(
        &config.name,
        RetryPolicy::default(),
        Some(config.requests_per_minute / 60.0),
    )?;
    let api = Arc::new(Api {
        service,
        root: config.base_url.clone(),
        token,
        login: config.login_account_id.clone(),
    });
    let encoder = MemberEncoder::new(&schema, &run.consent_columns)?;
    let list = match &config.user_list {
        AudienceRef::Id(id) => id.clone(),
        AudienceRef::Name(name) => api.find_or_create(config, name).await?,
    };
    let destination = request::destination(config, &list);
    let started = started_at(config, delivery).await?;
    let ingest = op != Op::Remove;
    let method = if ingest {
        "v1/audienceMembers:ingest"
    } else {
        "v1/audienceMembers:remove"
    };

    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    // What every request body needs, shared by the upload tasks.
    let encoding = Arc::new((config.clone(), destination.clone(), encoder.clone()));
    let skipped = AtomicU64::new(0);
    let send = |seq: u64, parts: batch::Parts, _last: bool| {
        // Counted here, so the members of a resumed batch are counted too.
        let (usable, none) = encoder.count(&parts);
        skipped.fetch_add(none, Ordering::Relaxed);
        let (api, encoding) = (api.clone(), encoding.clone());
        async move {
            if usable == 0 {
                return Ok(None);
            }
            let (config, destination, encoder) = &*encoding;
            let body = request::body(config, destination, encoder, &parts, ingest);
            drop(parts);
            let answer = api
                .post_bytes(&format!("upload batch {seq}"), method, body.into())
                .await?;
            Ok(Some(answer))
        }
    };
    let mut request_ids = vec![];
    let mut sends =
        Driver::single_step(config.concurrency).start(members, config.batch, delivery, send);
    while let Some(sent) = sends.next().await {
        let Some(answer) = sent?.1 else { continue };
        let id = answer["requestId"].as_str().ok_or_else(|| {
            Error::transient(format!(
                "{}: an upload answer carries no requestId",
                config.name
            ))
        })?;
        request_ids.push(id.to_string());
    }
    sends.progress().count_in(&mut report);
    let skipped = skipped.load(Ordering::Relaxed);
    // Rows are the members sent (or sent by a killed attempt): those with an identifier.
    report.rows -= skipped;

    let statuses = poll(&api, &request_ids, config.concurrency).await?;
    if op == Op::Replace {
        remove_added_before(&api, &destination, started).await?;
    }
    checkpoint.finish(phase).await?;
    api.service.counters.count_in(&mut report);
    report.platform_invalid = statuses.failed_records;
    report.not_sent = skipped;
    report.outputs.push(statuses.describe(config, &list));
    Ok(report)
}

/// When this run started, as a replace tells Google what to remove at its end: whatever was
/// last added before then. A little early, so a clock running ahead of Google's cannot remove
/// members this run ingests (members added just before the run stay one more run). A replace
/// keeps it in its checkpoint, so a resumed one keeps its killed attempt's start time.
async fn started_at(
    config: &GoogleConfig,
    delivery: &Delivery,
) -> Result<chrono::DateTime<chrono::Utc>> {
    let (checkpoint, phase) = (&delivery.checkpoint, delivery.op.phase());
    let kept = checkpoint.session(phase).await;
    if let Some(t) = kept.and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok()) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let margin = chrono::Duration::seconds(config.replace_clock_margin_secs as i64);
    let t = chrono::Utc::now() - margin;
    if delivery.op == Op::Replace {
        let text = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        checkpoint.set_session(phase, &text).await?;
    }
    Ok(t)
}

/// The end of a replace: removes the members last added before it started, and waits until
/// Google has.
async fn remove_added_before(
    api: &Api,
    destination: &Value,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let body = json!({
        "destinations": [destination],
        "removeAsOfTime": started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    let method = "v1/audienceMembers:removeAll";
    let answer = api
        .post("remove members not in this run", method, &body)
        .await?;
    if let Some(id) = answer["requestId"].as_str() {
        poll(api, &[id.to_string()], 1).await?;
    }
    Ok(())
}

#[derive(Default)]
struct Statuses {
    match_rates: BTreeMap<String, u64>,
    failed_records: u64,
}

impl Statuses {
    /// The report's line for the list: where it is, and the match rates Google gave.
    fn describe(&self, config: &GoogleConfig, list: &str) -> String {
        let ranges: Vec<String> = self
            .match_rates
            .iter()
            .map(|(r, n)| format!("{r} ({n} requests)"))
            .collect();
        let rates = match ranges.is_empty() {
            true => String::new(),
            false => format!(", match rate {}", ranges.join(", ")),
        };
        let (kind, id) = (&config.account_type, &config.account_id);
        format!("Google user list {list} in {kind} {id}{rates}")
    }
}

/// Waits until every request is processed, polling up to `concurrency` of them at a time; a
/// FAILED request fails the run.
async fn poll(api: &Api, ids: &[String], concurrency: usize) -> Result<Statuses> {
    let mut statuses = Statuses::default();
    let mut waiting = ids.iter();
    let mut answers = FuturesUnordered::new();
    loop {
        while answers.len() < concurrency.max(1)
            && let Some(id) = waiting.next()
        {
            answers.push(poll_one(api, id));
        }
        let Some(per) = answers.next().await else {
            break;
        };
        for d in &per? {
            if let Some(r) = d["audienceMembersIngestionStatus"]["userDataIngestionStatus"]
                ["uploadMatchRateRange"]
                .as_str()
            {
                *statuses.match_rates.entry(r.to_string()).or_default() += 1;
            }
            for e in d["errorInfo"]["errorCounts"]
                .as_array()
                .into_iter()
                .flatten()
            {
                statuses.failed_records += e["recordCount"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(statuses)
}

/// One request's statuses per destination, once it is processed.
async fn poll_one(api: &Api, id: &str) -> Result<Vec<Value>> {
    let mut wait = Duration::from_millis(200);
    for attempt in 0.. {
        let answer = api
            .get(
                "request status",
                "v1/requestStatus:retrieve",
                &[("requestId", id)],
            )
            .await?;
        let per = answer["requestStatusPerDestination"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let processing = per.iter().any(|d| {
            matches!(
                d["requestStatus"].as_str(),
                Some("PROCESSING") | Some("REQUEST_STATUS_UNKNOWN") | None
            )
        });
        if !per.is_empty() && !processing {
            if let Some(d) = per.iter().find(|d| d["requestStatus"] == "FAILED") {
                return Err(Error::config(format!(
                    "{}: request {id} failed: {}",
                    api.service.name, d["errorInfo"]
                )));
            }
            return Ok(per);
        }
        if attempt >= 60 {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    Err(Error::transient(format!(
        "{}: request {id} was still being processed after 60 polls; rerun later",
        api.service.name
    )))
}
