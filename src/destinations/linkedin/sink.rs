//! The LinkedIn pipeline: the DMP segment found by name among the ad account's (or by the id a
//! killed attempt recorded, or the job's `audience_id`, checked to be the account's user
//! segment), created if missing; then each batch is one BATCH_CREATE of `ADD` (add) or
//! `REMOVE` (remove) elements, one request a batch, through the shared driver. A segment
//! LinkedIn has just created is "not found" for some seconds: the users call retries that 404
//! for a segment this phase created, for `NOT_READY_FOR` at most; for any other segment a 404 is
//! permanent. Elements LinkedIn refuses one by one are counted with masked samples
//! (`platform_invalid`), not sent again; an element answered as transient sends its batch again.
//!
//! Every call carries `LinkedIn-Version`, `X-Restli-Protocol-Version: 2.0.0` and the Rest.li
//! method it is (`FINDER`, `GET`, `CREATE`, `BATCH_CREATE`), as LinkedIn's own client sends them.

use super::config::LinkedInConfig;
use super::request::ElementEncoder;
use super::service::{self, Refused};
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service, Verdict};
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Segments asked for per page of the account finder.
const PAGE: usize = 100;

struct Api {
    service: Service,
    /// `https://api.linkedin.com/rest`
    root: String,
    /// The `LinkedIn-Version` header.
    version: String,
    token: secrets::Secret,
}

impl Api {
    /// A request with the headers every LinkedIn call carries.
    fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        url: &str,
        restli_method: &str,
    ) -> reqwest::RequestBuilder {
        client
            .request(method, url)
            .bearer_auth(self.token.expose())
            .header("LinkedIn-Version", self.version.as_str())
            .header("X-Restli-Protocol-Version", "2.0.0")
            .header("X-RestLi-Method", restli_method)
    }

    /// The id of the ad account's user segment named `name`, if there is one.
    async fn find(&self, config: &LinkedInConfig, name: &str) -> Result<Option<String>> {
        let url = format!("{}/dmpSegments", self.root);
        let account = config.account_urn();
        let mut start = 0usize;
        loop {
            let query = [
                ("q", "account".to_string()),
                ("account", account.clone()),
                ("start", start.to_string()),
                ("count", PAGE.to_string()),
            ];
            let page = self
                .service
                .call(
                    "list segments",
                    |c| self.request(c, Method::GET, &url, "FINDER").query(&query),
                    service::classify,
                )
                .await?;
            let elements = page["elements"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Some(found) = elements
                .iter()
                .find(|s| s["name"].as_str() == Some(name) && is_user_segment(s))
            {
                return segment_id(found).map(Some);
            }
            // The end: an empty page, or past the total when LinkedIn gives one. A page shorter
            // than asked for is not the end: LinkedIn may cap `count` below what was asked.
            if elements.is_empty() {
                return Ok(None);
            }
            start += elements.len();
            let total = page["paging"]["total"].as_u64();
            if total.is_some_and(|t| start as u64 >= t) {
                return Ok(None);
            }
        }
    }

    /// Creates the user segment `name`, and never twice: a create whose answer was lost is
    /// looked up before it is tried again.
    async fn create(&self, config: &LinkedInConfig, name: &str) -> Result<String> {
        let url = format!("{}/dmpSegments", self.root);
        let body = json!({
            "name": name,
            "description": "Managed by activator",
            "sourcePlatform": config.source_platform.as_deref().unwrap_or_default(),
            "account": config.account_urn(),
            "type": "USER",
            "accessPolicy": "PRIVATE",
            "destinations": [{"destination": "LINKEDIN"}],
        });
        let id = self
            .service
            .find_or_create(
                "create segment",
                || self.find(config, name),
                |c| self.request(c, Method::POST, &url, "CREATE").json(&body),
                |status, headers, bytes| {
                    service::classify(status, headers, bytes).map(|v| created_id(headers, &v))
                },
            )
            .await?;
        if id.is_empty() {
            return Err(Error::transient(
                "linkedin: the create answer carries no segment id (x-restli-id)",
            ));
        }
        tracing::info!(destination = %config.name, segment = %id, "created DMP segment");
        Ok(id)
    }

    /// Checks that the segment the job names by id is a user segment of its ad account.
    async fn check(&self, config: &LinkedInConfig, id: &str) -> Result<()> {
        let url = format!("{}/dmpSegments/{id}", self.root);
        let segment = self
            .service
            .call(
                "get segment",
                |c| self.request(c, Method::GET, &url, "GET"),
                |status, headers, body| match service::classify(status, headers, body) {
                    Verdict::Fail(why) if status == StatusCode::NOT_FOUND => Verdict::Fail(
                        format!("{why}; the token sees no DMP segment {id}: check audience_id"),
                    ),
                    v => v,
                },
            )
            .await?;
        if let Some(account) = segment["account"].as_str()
            && account != config.account_urn()
        {
            return Err(Error::config(format!(
                "{}: DMP segment {id} belongs to {account}, not to ad account {}: check audience_id and ad_account_id",
                config.name, config.ad_account_id
            )));
        }
        if !is_user_segment(&segment) {
            return Err(Error::config(format!(
                "{}: DMP segment {id} is a {} segment; activator sends users: give a user segment's audience_id",
                config.name,
                segment["type"].as_str().unwrap_or("non-user")
            )));
        }
        Ok(())
    }

    /// One BATCH_CREATE of elements, `sent` describing them; the body is built once and shared
    /// by every try. The elements refused for good. `not_ready_until`: when this phase created
    /// the segment, until when a 404 means it is not ready yet.
    async fn users(
        &self,
        what: &str,
        segment: &str,
        body: bytes::Bytes,
        sent: &[(&str, usize)],
        not_ready_until: Option<Instant>,
    ) -> Result<Refused> {
        let url = format!("{}/dmpSegments/{segment}/users", self.root);
        self.service
            .call(
                what,
                |c| {
                    self.request(c, Method::POST, &url, "BATCH_CREATE")
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone())
                },
                |status, headers, bytes| {
                    service::classify_users(status, headers, bytes, sent, segment, not_ready_until)
                },
            )
            .await
    }
}

/// A segment of users: `USER` as created (list uploads report `USER_LIST_UPLOAD`), or no type.
fn is_user_segment(segment: &Value) -> bool {
    segment["type"]
        .as_str()
        .is_none_or(|t| t.starts_with("USER"))
}

fn segment_id(segment: &Value) -> Result<String> {
    match &segment["id"] {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) if !s.is_empty() => Ok(without_urn(s).to_string()),
        _ => Err(Error::transient(
            "linkedin: the answer carries no segment id",
        )),
    }
}

/// The created segment's id: the `x-restli-id` header (the id, or a URN ending in it), else an
/// `id` in the body; empty when neither is there.
fn created_id(headers: &HeaderMap, body: &Value) -> String {
    match headers.get("x-restli-id").and_then(|v| v.to_str().ok()) {
        Some(id) => without_urn(id.trim()).to_string(),
        None => segment_id(body).unwrap_or_default(),
    }
}

/// `urn:li:dmpSegment:123` -> `123`; an id as it is.
fn without_urn(id: &str) -> &str {
    match id.strip_prefix("urn:") {
        Some(urn) => urn.rsplit(':').next().unwrap_or(urn),
        None => id,
    }
}

/// What one batch's send came to.
#[derive(Default)]
struct Sent {
    without_identifier: u64,
    refused: Refused,
}

pub async fn run(
    config: &LinkedInConfig,
    _run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    let phase = op.phase();
    let checkpoint = &delivery.checkpoint;
    let (action, verb) = match op {
        Op::Add => ("ADD", "add"),
        Op::Remove => ("REMOVE", "remove"),
        Op::Replace => {
            return Err(Error::internal(
                "linkedin: a replace reached the sink; the job loader rejects it",
            ));
        }
    };
    let encoder = ElementEncoder::new(&schema)?;
    let key = format!("destination {}", config.name);
    let token =
        secrets::platform_token(&config.access_token, &key, config.in_process_sandbox).await?;
    let api = Arc::new(Api {
        service: Service::new(
            &config.name,
            RetryPolicy::default(),
            Some(config.requests_per_second),
        )?,
        root: format!("{}/rest", config.base_url),
        version: config.api_version.clone(),
        token,
    });

    let (segment, not_ready_until) = dmp_segment(&api, config, delivery).await?;

    let shared_segment = Arc::new(segment.clone());
    let send = |seq: u64, parts: batch::Parts, _last: bool| {
        let (api, encoder, segment) = (api.clone(), encoder.clone(), shared_segment.clone());
        async move {
            let elements = encoder.elements(&parts, action);
            drop(parts);
            let mut sent = Sent {
                without_identifier: elements.without_identifier,
                ..Sent::default()
            };
            if elements.sent.is_empty() {
                return Ok(sent);
            }
            sent.refused = api
                .users(
                    &format!("{verb} batch {seq}"),
                    &segment,
                    elements.body.into(),
                    &elements.sent,
                    not_ready_until,
                )
                .await?;
            Ok(sent)
        }
    };
    let mut not_sent = 0;
    let mut refused = Refused::default();
    let mut sends =
        Driver::single_step(config.concurrency).start(members, config.batch, delivery, send);
    while let Some(done) = sends.next().await {
        let (_, sent) = done?;
        not_sent += sent.without_identifier;
        refused.merge(sent.refused);
    }
    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    sends.progress().count_in(&mut report);
    checkpoint.finish(phase).await?;
    api.service.counters.count_in(&mut report);
    report.not_sent = not_sent;
    if refused.count > 0 {
        tracing::warn!(destination = %config.name, refused = refused.count, "LinkedIn refused elements; they were counted, not sent again");
    }
    report.platform_invalid = refused.count;
    report.platform_invalid_samples = refused.samples;
    let name = match &config.audience {
        AudienceRef::Name(n) => n.as_str(),
        AudienceRef::Id(_) => "by id",
    };
    let account = &config.ad_account_id;
    report.outputs.push(format!(
        "LinkedIn DMP segment {segment} ({name}) of ad account {account}"
    ));
    Ok(report)
}

/// The DMP segment the phase sends to, kept in the checkpoint: the one its killed attempt used,
/// else the job's by id (checked), else the ad account's of the job's name, created if there is
/// none (but for a remove, which then has nothing to remove from). Only a segment created here
/// may answer 404 for a while: until the instant returned.
async fn dmp_segment(
    api: &Api,
    config: &LinkedInConfig,
    delivery: &Delivery,
) -> Result<(String, Option<Instant>)> {
    let (checkpoint, phase) = (&delivery.checkpoint, delivery.op.phase());
    let (segment, not_ready_until) = match (checkpoint.session(phase).await, &config.audience) {
        (Some(id), _) => (id, None),
        (None, AudienceRef::Id(id)) => {
            api.check(config, id).await?;
            (id.clone(), None)
        }
        (None, AudienceRef::Name(name)) => match api.find(config, name).await? {
            Some(id) => (id, None),
            None if delivery.op == Op::Remove => {
                return Err(Error::config(format!(
                    "{}: ad account {} has no DMP segment named {name}: there is nothing to remove from",
                    config.name, config.ad_account_id
                )));
            }
            None => {
                let id = api.create(config, name).await?;
                (id, Some(Instant::now() + super::NOT_READY_FOR))
            }
        },
    };
    checkpoint.set_session(phase, &segment).await?;
    Ok((segment, not_ready_until))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_ids_come_from_the_header_as_ids_or_urns() {
        let mut headers = HeaderMap::new();
        assert_eq!(created_id(&headers, &json!({"id": 7})), "7");
        assert_eq!(created_id(&headers, &Value::Null), "");
        headers.insert("x-restli-id", "10804".parse().unwrap());
        assert_eq!(created_id(&headers, &Value::Null), "10804");
        headers.insert("x-restli-id", "urn:li:dmpSegment:10805".parse().unwrap());
        assert_eq!(created_id(&headers, &Value::Null), "10805");
        assert!(is_user_segment(&json!({"type": "USER"})));
        assert!(is_user_segment(&json!({"type": "USER_LIST_UPLOAD"})));
        assert!(!is_user_segment(&json!({"type": "COMPANY"})));
    }
}
