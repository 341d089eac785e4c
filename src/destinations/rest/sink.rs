//! The REST pipeline: headers resolved once (secret values marked sensitive, never logged), then
//! each batch rendered and sent to the add or remove endpoint, one request a batch, through the
//! shared driver.

use super::config::{HeaderValue, RestConfig};
use super::request::BodyContext;
use super::service;
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service};
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::stream::BoxStream;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName};
use std::sync::Arc;

/// The job's headers with secrets resolved; JSON unless the job names another content type.
async fn headers(config: &RestConfig) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in &config.headers {
        let key = format!("destination {}: headers.{name}", config.name);
        let (text, sensitive) = match value {
            HeaderValue::Literal(s) => (s.clone(), false),
            HeaderValue::Secret { prefix, reference } => (
                format!(
                    "{prefix}{}",
                    secrets::resolve(reference, &key).await?.expose()
                ),
                true,
            ),
        };
        let mut header = reqwest::header::HeaderValue::from_str(&text).map_err(|_| {
            Error::config(format!(
                "{key}: the value is not a valid header value (its text is not shown)"
            ))
        })?;
        header.set_sensitive(sensitive);
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::config(format!("{key}: not a header name")))?;
        map.insert(name, header);
    }
    if !map.contains_key(CONTENT_TYPE) {
        map.insert(CONTENT_TYPE, "application/json".parse().expect("valid"));
    }
    Ok(map)
}

pub async fn run(
    config: &RestConfig,
    run: &RunInfo,
    _schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let (endpoint, op) = match delivery.op {
        Op::Add => (&config.add, "add"),
        Op::Remove => (
            config.remove.as_ref().ok_or_else(|| {
                Error::internal("rest: a removal without remove_url or remove_method")
            })?,
            "remove",
        ),
        Op::Replace => {
            return Err(Error::internal(
                "rest: a replace reached the sink; the job loader rejects it",
            ));
        }
    };
    let headers = Arc::new(headers(config).await?);
    let api = Arc::new(Service::new(
        &config.name,
        RetryPolicy::default(),
        config.requests_per_second,
    )?);
    let url = Arc::new(endpoint.url.clone());
    let job = Arc::new(run.job.clone());
    let run_date = Arc::new(run.run_date.to_string());
    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    let send = |seq, parts, _last| {
        let (api, headers, url, job, run_date) = (
            api.clone(),
            headers.clone(),
            url.clone(),
            job.clone(),
            run_date.clone(),
        );
        let method = endpoint.method.clone();
        let (template, success, retry) = (
            config.body.clone(),
            config.success_status.clone(),
            config.retry_status.clone(),
        );
        let name = config.name.clone();
        async move {
            let batch = batch::concat(parts)?;
            let context = BodyContext {
                job: &job,
                run_date: &run_date,
                op,
                batch_seq: seq,
            };
            let body = Bytes::from(
                template
                    .render(&context, &batch)
                    .map_err(|m| Error::config(format!("{name}: batch {seq}: body: {m}")))?,
            );
            api.call(
                &format!("{op} batch {seq}"),
                |c| {
                    c.request(method.clone(), url.as_str())
                        .headers((*headers).clone())
                        .body(body.clone())
                },
                |status, h, b| service::classify(&success, &retry, status, h, b),
            )
            .await?;
            Ok(())
        }
    };
    let mut sends =
        Driver::single_step(config.concurrency).start(members, config.batch, delivery, send);
    while let Some(sent) = sends.next().await {
        sent?;
    }
    sends.progress().count_in(&mut report);
    delivery.checkpoint.finish(delivery.op.phase()).await?;
    api.counters.count_in(&mut report);
    report.outputs.push(format!(
        "{} {}",
        endpoint.method,
        without_query(&endpoint.url)
    ));
    Ok(report)
}

/// A URL for the report, without its query, which may carry a key.
fn without_query(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "the endpoint".into(),
    }
}
