//! The Snap pipeline: the segment found by name in the ad account (or by the id a killed attempt
//! recorded), created if missing; then each batch is one `POST` (add) or `DELETE` (remove) of
//! its users, one request a batch, through the shared driver.

use super::config::SnapConfig;
use super::request::UsersEncoder;
use super::service;
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service};
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

struct Api {
    service: Service,
    /// `https://adsapi.snapchat.com`
    base: String,
    token: secrets::Secret,
}

impl Api {
    async fn call(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        self.service
            .call(
                what,
                |c| {
                    let r = c
                        .request(method.clone(), url)
                        .bearer_auth(self.token.expose());
                    match body {
                        Some(b) => r.json(b),
                        None => r,
                    }
                },
                service::classify,
            )
            .await
    }

    /// The id of the ad account's segment named `name`, if there is one.
    async fn find(&self, config: &SnapConfig, name: &str) -> Result<Option<String>> {
        let mut url = format!(
            "{}/v1/adaccounts/{}/segments",
            self.base, config.ad_account_id
        );
        loop {
            let page = self.call("list segments", Method::GET, &url, None).await?;
            if let Some(found) = page["segments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| &s["segment"])
                .find(|s| s["name"].as_str() == Some(name))
            {
                return segment_id(found).map(Some);
            }
            // The next page's full URL; followed only on the same host, which gets the token.
            match page["paging"]["next_link"].as_str() {
                Some(next) if next.starts_with(&format!("{}/", self.base)) => {
                    url = next.to_string()
                }
                _ => return Ok(None),
            }
        }
    }

    async fn create(&self, config: &SnapConfig, name: &str) -> Result<String> {
        let url = format!(
            "{}/v1/adaccounts/{}/segments",
            self.base, config.ad_account_id
        );
        let body = json!({"segments": [{
            "name": name,
            "description": "Managed by activator",
            "source_type": "FIRST_PARTY",
            "retention_in_days": config.retention_in_days,
            "ad_account_id": config.ad_account_id,
        }]});
        let id = self
            .service
            .find_or_create(
                "create segment",
                || self.find(config, name),
                |c| c.post(&url).bearer_auth(self.token.expose()).json(&body),
                |status, headers, bytes| {
                    service::classify(status, headers, bytes)
                        .map(|v| segment_id(&v["segments"][0]["segment"]).unwrap_or_default())
                },
            )
            .await?;
        if id.is_empty() {
            return Err(Error::transient(
                "snap: the create answer carries no segment id",
            ));
        }
        tracing::info!(destination = %config.name, segment = %id, "created segment");
        Ok(id)
    }
}

fn segment_id(segment: &Value) -> Result<String> {
    match &segment["id"] {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::transient("snap: the answer carries no segment id")),
    }
}

pub async fn run(
    config: &SnapConfig,
    _run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    let phase = op.phase();
    let checkpoint = &delivery.checkpoint;
    let encoder = UsersEncoder::new(&schema)?;
    let key = format!("destination {}", config.name);
    let token =
        secrets::platform_token(&config.access_token, &key, config.in_process_sandbox).await?;
    let api = Arc::new(Api {
        service: Service::new(
            &config.name,
            RetryPolicy::default(),
            Some(config.requests_per_second),
        )?,
        base: config.base_url.clone(),
        token,
    });

    // A resumed phase goes on with the segment its killed attempt used.
    let segment = match (checkpoint.session(phase).await, &config.audience) {
        (Some(id), _) => id,
        (None, AudienceRef::Id(id)) => id.clone(),
        (None, AudienceRef::Name(name)) => match api.find(config, name).await? {
            Some(id) => id,
            None if op == Op::Remove => {
                return Err(Error::config(format!(
                    "{}: ad account {} has no segment named {name}: there is nothing to remove from",
                    config.name, config.ad_account_id
                )));
            }
            None => api.create(config, name).await?,
        },
    };
    checkpoint.set_session(phase, &segment).await?;

    let (method, verb) = match op {
        Op::Add => (Method::POST, "add"),
        Op::Remove => (Method::DELETE, "remove"),
        Op::Replace => {
            return Err(Error::internal(
                "snap: a replace reached the sink; the job loader rejects it",
            ));
        }
    };
    let url = Arc::new(format!("{}/v1/segments/{segment}/users", config.base_url));
    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    let send = |seq, parts, _last| {
        let (api, encoder, url, method) =
            (api.clone(), encoder.clone(), url.clone(), method.clone());
        async move {
            let users = encoder.users(&batch::concat(parts)?);
            if users.identifiers > 0 {
                api.call(
                    &format!("{verb} batch {seq}"),
                    method,
                    &url,
                    Some(&users.body),
                )
                .await?;
            }
            Ok(users.without_identifier)
        }
    };
    let mut without_identifier = 0;
    let mut sends =
        Driver::single_step(config.concurrency).start(members, config.batch, delivery, send);
    while let Some(sent) = sends.next().await {
        without_identifier += sent?.1;
    }
    sends.progress().count_in(&mut report);
    checkpoint.finish(phase).await?;
    api.service.counters.count_in(&mut report);
    report.outputs.push(format!(
        "Snap segment {segment} ({}) of ad account {}",
        match &config.audience {
            AudienceRef::Name(n) => n.as_str(),
            AudienceRef::Id(_) => "by id",
        },
        config.ad_account_id
    ));
    if without_identifier > 0 {
        report.outputs.push(format!(
            "{without_identifier} members with no e-mail, phone or mobile ad id were not sent"
        ));
    }
    Ok(report)
}
