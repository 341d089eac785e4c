//! The TikTok pipeline: the audience found by name (or by the id a killed attempt recorded);
//! members batched into files, uploaded `concurrency` at a time with their MD5 signatures; the
//! files applied in order, at most 49 per call: the first call creates a missing audience, or
//! updates it with `APPEND`, `REMOVE`, or for a replace `REPLACE` then `APPEND`. A batch is
//! acknowledged in the checkpoint once the call that applied its file succeeded.

use super::config::{CalculateType, TikTokConfig};
use super::request::{self, MemberFile};
use super::service;
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service};
use crate::destinations::ids::IdColumn;
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::sync::Arc;

struct Api {
    service: Service,
    /// `https://business-api.tiktok.com/open_api/v1.3`
    root: String,
    token: secrets::Secret,
    advertiser_id: String,
    calculate_type: CalculateType,
}

impl Api {
    /// The job's advertiser with its token, called at the destination's `requests_per_second`.
    async fn connect(config: &TikTokConfig) -> Result<Api> {
        let key = format!("destination {}", config.name);
        let token =
            secrets::platform_token(&config.access_token, &key, config.in_process_sandbox).await?;
        let rate = Some(config.requests_per_second);
        Ok(Api {
            service: Service::new(&config.name, RetryPolicy::default(), rate)?,
            root: format!("{}/open_api/{}", config.base_url, config.api_version),
            token,
            advertiser_id: config.advertiser_id.clone(),
            calculate_type: config.calculate_type,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/dmp/custom_audience/{path}", self.root)
    }

    async fn post(&self, what: &str, path: &str, body: &Value) -> Result<Value> {
        let url = self.url(path);
        self.service
            .call(
                what,
                |c| {
                    c.post(&url)
                        .header("Access-Token", self.token.expose())
                        .json(body)
                },
                service::classify,
            )
            .await
    }

    /// The id of the advertiser's audience named `name`, if there is one.
    async fn find(&self, name: &str) -> Result<Option<String>> {
        let url = self.url("list/");
        for page in 1u64.. {
            let page_text = page.to_string();
            let query = [
                ("advertiser_id", self.advertiser_id.as_str()),
                ("page", page_text.as_str()),
                ("page_size", "100"),
            ];
            let data = self
                .service
                .call(
                    "list audiences",
                    |c| {
                        c.get(&url)
                            .query(&query)
                            .header("Access-Token", self.token.expose())
                    },
                    service::classify,
                )
                .await?;
            // Field names of the list items are UNCONFIRMED; `audience_id` and `name` are the
            // documented-most-likely ones.
            if let Some(found) = data["list"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["name"].as_str() == Some(name))
            {
                return id_text(&found["audience_id"]).map(Some);
            }
            if page >= data["page_info"]["total_page"].as_u64().unwrap_or(1) {
                break;
            }
        }
        Ok(None)
    }

    /// Uploads a file; its `file_path`.
    async fn upload(&self, name: &str, file: &MemberFile) -> Result<String> {
        let signature = request::md5_hex(&file.bytes);
        let body = request::multipart(
            &[
                ("advertiser_id", &self.advertiser_id),
                ("calculate_type", self.calculate_type.api_name()),
                ("file_signature", &signature),
            ],
            name,
            &file.bytes,
        );
        let url = self.url("file/upload/");
        let data = self
            .service
            .call(
                &format!("upload file {name}"),
                |c| {
                    c.post(&url)
                        .header("Access-Token", self.token.expose())
                        .header("content-type", &body.content_type)
                        .body(body.body.clone())
                },
                service::classify,
            )
            .await?;
        data["file_path"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::transient("tiktok: the upload answer carries no file_path"))
    }

    /// Creates the audience `name` from files, or finds it if a lost answer hid that it was
    /// created; the id, and whether this call created it.
    async fn create(&self, name: &str, file_paths: &[String]) -> Result<(String, bool)> {
        let url = self.url("create/");
        let body = json!({
            "advertiser_id": self.advertiser_id,
            "custom_audience_name": name,
            "file_paths": file_paths,
            "calculate_type": self.calculate_type.api_name(),
        });
        let (id, created) = self
            .service
            .find_or_create(
                "create audience",
                || async move { Ok(self.find(name).await?.map(|id| (id, false))) },
                |c| {
                    c.post(&url)
                        .header("Access-Token", self.token.expose())
                        .json(&body)
                },
                |status, headers, bytes| {
                    service::classify(status, headers, bytes).map(|data| {
                        (
                            id_text(&data["custom_audience_id"]).unwrap_or_default(),
                            true,
                        )
                    })
                },
            )
            .await?;
        if id.is_empty() {
            return Err(Error::transient(
                "tiktok: the create answer carries no custom_audience_id",
            ));
        }
        Ok((id, created))
    }
}

/// TikTok ids are digits, as JSON strings or numbers.
fn id_text(v: &Value) -> Result<String> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::transient(
            "tiktok: the answer carries no audience id",
        )),
    }
}

/// The audience a delivery changes, and how far it got.
struct Target<'a> {
    api: &'a Api,
    config: &'a TikTokConfig,
    delivery: &'a Delivery,
    id: Option<String>,
    /// A replace swaps the audience's files with its first call; later calls append.
    replaced: bool,
}

impl Target<'_> {
    /// Applies uploaded files (batches without a file ride along) and acknowledges the batches.
    async fn apply(&mut self, batches: Vec<(u64, Option<String>)>) -> Result<()> {
        let op = self.delivery.op;
        let phase = op.phase();
        let paths: Vec<String> = batches.iter().filter_map(|(_, p)| p.clone()).collect();
        if !paths.is_empty() {
            let action = match op {
                Op::Remove => "REMOVE",
                Op::Replace if !self.replaced => "REPLACE",
                Op::Add | Op::Replace => "APPEND",
            };
            let id = match self.id.clone() {
                Some(id) => {
                    self.update(&id, &paths, action).await?;
                    id
                }
                None => {
                    let AudienceRef::Name(name) = &self.config.audience else {
                        unreachable!("an audience given by id is known from the start")
                    };
                    let (id, created) = self.api.create(name, &paths).await?;
                    if created {
                        tracing::info!(destination = %self.config.name, audience = %id, "created audience");
                    } else {
                        // Created by the attempt whose answer was lost; the update is idempotent.
                        self.update(&id, &paths, action).await?;
                    }
                    self.delivery.checkpoint.set_session(phase, &id).await?;
                    self.id = Some(id.clone());
                    id
                }
            };
            tracing::debug!(destination = %self.config.name, audience = %id, files = paths.len(), action, "applied files");
            self.replaced = true;
        }
        for (seq, _) in batches {
            self.delivery.checkpoint.ack(phase, seq).await?;
        }
        Ok(())
    }

    async fn update(&self, id: &str, paths: &[String], action: &str) -> Result<()> {
        let body = json!({
            "advertiser_id": self.api.advertiser_id,
            "custom_audience_id": id,
            "file_paths": paths,
            "action": action,
        });
        self.api
            .post(&format!("{action} {} files", paths.len()), "update/", &body)
            .await
            .map(|_| ())
    }
}

pub async fn run(
    config: &TikTokConfig,
    _run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    let phase = op.phase();
    let checkpoint = delivery.checkpoint.clone();
    let kind = config.calculate_type.id_kind();
    let column = IdColumn::find(&schema, kind).ok_or_else(|| {
        Error::config(format!(
            "{}: calculate_type {} is written from identifiers.{}, which the job does not map",
            config.name,
            config.calculate_type.api_name(),
            kind.kind()
        ))
    })?;
    let api = Arc::new(Api::connect(config).await?);
    let id = audience(&api, config, delivery).await?;
    let mut target = Target {
        api: &api,
        config,
        delivery,
        id,
        replaced: op != Op::Replace || checkpoint.acked_count(phase).await > 0,
    };

    // Uploads are spawned, so they progress while earlier files are being applied; the
    // batches are acknowledged once their files are applied.
    let send = |seq: u64, parts: batch::Parts, _last: bool| {
        let (api, column) = (api.clone(), column.clone());
        async move {
            let file = request::member_file(&column, &batch::concat(parts)?);
            let file_path = match file.lines {
                0 => None,
                _ => Some(
                    api.upload(&format!("activator-{phase}-{seq}.txt"), &file)
                        .await?,
                ),
            };
            Ok((file_path, file.without_identifier))
        }
    };
    let driver = Driver {
        concurrency: config.concurrency,
        first_alone: false,
        last_after_the_rest: false,
        in_order: true,
        ack_when_sent: false,
    };
    let mut uploads = driver.start(members, config.batch, delivery, send);

    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    let mut without_identifier = 0u64;
    let mut pending: Vec<(u64, Option<String>)> = vec![];
    let mut pending_files = 0;
    while let Some(uploaded) = uploads.next().await {
        let (seq, (file_path, none)) = uploaded?;
        without_identifier += none;
        pending_files += usize::from(file_path.is_some());
        pending.push((seq, file_path));
        if pending_files == super::MAX_FILES_PER_CALL {
            target.apply(std::mem::take(&mut pending)).await?;
            pending_files = 0;
        }
    }
    uploads.progress().count_in(&mut report);
    if op == Op::Replace && pending_files == 0 && !target.replaced {
        return Err(Error::guard(format!(
            "{}: no member has {}; refusing to replace the audience with nothing",
            config.name,
            kind.kind()
        )));
    }
    target.apply(pending).await?;
    checkpoint.finish(phase).await?;

    api.service.counters.count_in(&mut report);
    report.outputs.push(described(config, target.id.as_deref()));
    if without_identifier > 0 {
        report.outputs.push(format!(
            "{without_identifier} members without {} were not sent",
            kind.kind()
        ));
    }
    Ok(report)
}

/// The audience the phase sends to: the one its killed attempt used or created (kept in the
/// checkpoint), else the job's by id, else the advertiser's of the job's name (none yet: it is
/// created with the first file). A remove from an audience that does not exist is an error.
async fn audience(api: &Api, config: &TikTokConfig, delivery: &Delivery) -> Result<Option<String>> {
    let (checkpoint, phase) = (&delivery.checkpoint, delivery.op.phase());
    let recorded = checkpoint.session(phase).await;
    let id = match (&recorded, &config.audience) {
        (Some(id), _) | (None, AudienceRef::Id(id)) => Some(id.clone()),
        (None, AudienceRef::Name(name)) => api.find(name).await?,
    };
    if let (None, Some(id)) = (&recorded, &id) {
        checkpoint.set_session(phase, id).await?;
    }
    if id.is_none() && delivery.op == Op::Remove {
        return Err(Error::config(format!(
            "{}: advertiser {} has no audience named {}: there is nothing to remove from",
            config.name,
            config.advertiser_id,
            audience_name(config).unwrap_or_default()
        )));
    }
    Ok(id)
}

fn audience_name(config: &TikTokConfig) -> Option<&str> {
    match &config.audience {
        AudienceRef::Name(n) => Some(n.as_str()),
        AudienceRef::Id(_) => None,
    }
}

/// The report's line for the audience sent to, or for none.
fn described(config: &TikTokConfig, id: Option<&str>) -> String {
    let kind = config.calculate_type.id_kind().kind();
    let Some(id) = id else {
        return format!("TikTok: nothing sent, no member has {kind}");
    };
    format!(
        "TikTok audience {id} ({}) of advertiser {}, {}",
        audience_name(config).unwrap_or("by id"),
        config.advertiser_id,
        config.calculate_type.api_name()
    )
}
