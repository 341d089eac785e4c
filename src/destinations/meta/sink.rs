//! The Meta pipeline: audience found or created, then members batched (≤ 10,000 rows), encoded
//! and sent in one session through the shared driver: batch 1 first, then up to `concurrency`
//! batches in flight, then the last batch with `last_batch_flag` once every other batch is
//! acknowledged.

use super::config::MetaConfig;
use super::request::{self, PayloadSchema};
use super::service;
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service, Verdict, mask};
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::sync::Arc;

struct Api {
    service: Service,
    /// `https://graph.facebook.com/v25.0`
    root: String,
    token: secrets::Secret,
}

impl Api {
    async fn get(&self, what: &str, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}/{path}", self.root);
        self.service
            .call(
                what,
                |c| c.get(&url).query(query).bearer_auth(self.token.expose()),
                service::classify,
            )
            .await
    }

    /// A JSON-bodied call; the body (token included) is built once and shared by every try.
    async fn send_json(
        &self,
        what: &str,
        path: &str,
        method: &str,
        body: bytes::Bytes,
        classify: impl Fn(StatusCode, &HeaderMap, &[u8]) -> Verdict<Value>,
    ) -> Result<Value> {
        let url = format!("{}/{path}", self.root);
        self.service
            .call(
                what,
                |c| {
                    let request = if method == "DELETE" {
                        c.delete(&url)
                    } else {
                        c.post(&url)
                    };
                    request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                },
                classify,
            )
            .await
    }

    /// The id of the audience named `name` in the account, created if there is none, and never
    /// twice: a create whose answer was lost is looked up before it is tried again.
    async fn find_or_create(&self, config: &MetaConfig, name: &str) -> Result<String> {
        let path = format!("act_{}/customaudiences", config.ad_account_id);
        let url = format!("{}/{path}", self.root);
        let form = [
            ("name", name),
            ("subtype", "CUSTOM"),
            ("description", "Managed by activator"),
            ("customer_file_source", config.customer_file_source.as_str()),
            ("access_token", self.token.expose()),
        ];
        self.service
            .find_or_create(
                "create audience",
                || self.find(&path, name),
                |c| c.post(&url).form(&form),
                |status, headers, answer| match service::classify(status, headers, answer) {
                    Verdict::Done(v) => match id_of(&v) {
                        Ok(id) => Verdict::Done(id),
                        Err(e) => Verdict::Fail(e.to_string()),
                    },
                    other => other.map(|_| String::new()),
                },
            )
            .await
    }

    /// The id of the audience named `name` under `path`, if there is one.
    async fn find(&self, path: &str, name: &str) -> Result<Option<String>> {
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("fields", "id,name"), ("limit", "500")];
            if let Some(a) = &after {
                query.push(("after", a.as_str()));
            }
            let page = self.get("list audiences", path, &query).await?;
            if let Some(found) = page["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["name"].as_str() == Some(name))
            {
                return Ok(Some(id_of(found)?));
            }
            match page["paging"]["cursors"]["after"].as_str() {
                Some(a) if page["paging"]["next"].is_string() => after = Some(a.to_string()),
                _ => return Ok(None),
            }
        }
    }
}

fn id_of(v: &Value) -> Result<String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::transient("meta: the answer carries no audience id"))
}

/// What the platform said about the batches.
#[derive(Default)]
struct Received {
    invalid: u64,
    samples: Vec<String>,
}

impl Received {
    fn add(&mut self, answer: &Value) {
        self.invalid += answer["num_invalid_entries"].as_u64().unwrap_or(0);
        if let Some(samples) = answer["invalid_entry_samples"].as_object() {
            for v in samples
                .values()
                .take(5usize.saturating_sub(self.samples.len()))
            {
                self.samples.push(mask(&v.to_string()));
            }
        }
    }
}

pub async fn run(
    config: &MetaConfig,
    _run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    let total = delivery.members;
    let phase = op.phase();
    let checkpoint = delivery.checkpoint.clone();
    let key = format!("destination {}", config.name);
    let token =
        secrets::platform_token(&config.access_token, &key, config.in_process_sandbox).await?;
    let service = Service::new(
        &config.name,
        RetryPolicy::default(),
        config.requests_per_second,
    )?;
    let api = Arc::new(Api {
        service,
        root: format!("{}/{}", config.base_url, config.api_version),
        token,
    });
    let payload_schema = PayloadSchema::new(&schema)?;
    let audience_id = match &config.audience {
        AudienceRef::Id(id) => id.clone(),
        AudienceRef::Name(name) => api.find_or_create(config, name).await?,
    };
    let edge = match op {
        Op::Add | Op::Remove => format!("{audience_id}/users"),
        Op::Replace => format!("{audience_id}/usersreplace"),
    };
    let method = if op == Op::Remove { "DELETE" } else { "POST" };
    let session_id = session_id(delivery).await?;
    let send = |seq: u64, parts: batch::Parts, last: bool| {
        let (api, edge, payload_schema) = (api.clone(), edge.clone(), payload_schema.clone());
        async move {
            let session = request::session(session_id, seq, last, total);
            let body = payload_schema.upload_body(&parts, &session, api.token.expose());
            drop(parts);
            let what = format!("upload batch {seq}");
            let verdict = move |status, headers: &_, body: &_| {
                last_batch_verdict(status, headers, body, last)
            };
            api.send_json(&what, &edge, method, body.into(), verdict)
                .await
        }
    };
    // Batch 1 opens the session (and a replace); the last carries last_batch_flag.
    let driver = Driver {
        concurrency: config.concurrency,
        first_alone: true,
        last_after_the_rest: true,
        in_order: false,
        ack_when_sent: true,
    };
    let mut received = Received::default();
    let mut sends = driver.start(members, config.batch, delivery, send);
    while let Some(sent) = sends.next().await {
        received.add(&sent?.1);
    }
    if sends.progress().batches == 0 && op == Op::Replace {
        return Err(Error::guard(format!(
            "{}: the segment has no members; refusing to replace the audience with nothing",
            config.name
        )));
    }
    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    sends.progress().count_in(&mut report);
    checkpoint.finish(phase).await?;
    api.service.counters.count_in(&mut report);
    report.platform_invalid = received.invalid;
    report.platform_invalid_samples = received.samples;
    let name = match &config.audience {
        AudienceRef::Name(n) => n.as_str(),
        AudienceRef::Id(_) => "by id",
    };
    let account = &config.ad_account_id;
    report.outputs.push(format!(
        "Meta audience {audience_id} ({name}) in act_{account}, session {session_id}"
    ));
    Ok(report)
}

/// The phase's upload session: unique within the ad account, positive 63-bit. A resumed run
/// goes on with the session its killed attempt opened (Meta keeps it open 90 minutes), kept in
/// the checkpoint.
async fn session_id(delivery: &Delivery) -> Result<u64> {
    use std::hash::{BuildHasher, Hasher};
    let (checkpoint, phase) = (&delivery.checkpoint, delivery.op.phase());
    let resumed = checkpoint.session(phase).await;
    if let Some(id) = resumed.and_then(|s| s.parse::<u64>().ok()) {
        return Ok(id);
    }
    let mut h = foldhash::fast::RandomState::default().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.unwrap_or_default().as_nanos());
    let id = (h.finish() >> 1).max(1);
    checkpoint.set_session(phase, &id.to_string()).await?;
    Ok(id)
}

/// Meta's answer to a batch, classified: "session already finished" in answer to the last
/// batch means an earlier attempt of it was applied and its answer lost, so it is done.
fn last_batch_verdict(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    last: bool,
) -> Verdict<Value> {
    match service::classify(status, headers, body) {
        Verdict::Fail(why) if last && why.contains("subcode 1870159") => Verdict::Done(Value::Null),
        v => v,
    }
}
