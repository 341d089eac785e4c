//! The Pinterest pipeline: the customer list found by name in the ad account (or by the id a
//! killed attempt recorded, or the job gave); then each batch is one `PATCH` of its records,
//! `ADD` or `REMOVE`, through the shared driver. Pinterest creates a list only with records, so
//! a missing list is created by the first batch that has some, while the batches behind it wait
//! for its id; a create whose answer was lost is found by name, not made twice. The phase is
//! finished in the checkpoint once the last batch is sent. After an add, the list is then made
//! targetable (its `CUSTOMER_LIST` audience found or created) and its status is read until
//! Pinterest has matched it or `status_wait_seconds` have passed, both best-effort: the members
//! are delivered by then, so a failure there is a warning and a line of the report, never the
//! run's failure. `TOO_SMALL` is reported as Pinterest's word on the match count, not as a
//! failure.

use super::config::PinterestConfig;
use super::request::{self, RecordsEncoder};
use super::service;
use crate::batch;
use crate::destinations::checkpoint::Checkpoint;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service, platform_message};
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Api {
    service: Service,
    /// `https://api.pinterest.com/v5/ad_accounts/{ad_account_id}`
    account: String,
    token: secrets::Secret,
}

impl Api {
    async fn call(
        &self,
        what: &str,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value> {
        self.service
            .call(
                what,
                |c| {
                    let r = c
                        .request(method.clone(), url)
                        .query(query)
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

    /// The id of the first item of a bookmark-paged listing that `wanted` picks, if any.
    async fn find(
        &self,
        what: &str,
        url: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Option<String>> {
        let page_size = super::PAGE_SIZE.to_string();
        let mut bookmark: Option<String> = None;
        loop {
            let page = {
                let mut query = vec![("page_size", page_size.as_str())];
                if let Some(b) = &bookmark {
                    query.push(("bookmark", b.as_str()));
                }
                self.call(what, Method::GET, url, &query, None).await?
            };
            let found = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|item| wanted(item));
            if let Some(found) = found {
                return id_text(&found["id"]).map(Some);
            }
            match page["bookmark"].as_str() {
                Some(next) if !next.is_empty() => bookmark = Some(next.to_string()),
                _ => return Ok(None),
            }
        }
    }

    /// The id of the ad account's customer list named `name`, if there is one.
    async fn find_list(&self, name: &str) -> Result<Option<String>> {
        let url = format!("{}/customer_lists", self.account);
        self.find("list customer lists", &url, |l| {
            l["name"].as_str() == Some(name)
        })
        .await
    }

    /// Creates the list `name` with its first records, or finds it if a lost answer hid that it
    /// was created; its id, and whether this call created it (with the records in it).
    async fn create_list(
        &self,
        name: &str,
        list_type: &str,
        records: &str,
    ) -> Result<(String, bool)> {
        let url = format!("{}/customer_lists", self.account);
        let body = request::create(name, list_type, records);
        let (id, created) = self
            .service
            .find_or_create(
                "create customer list",
                || async move { Ok(self.find_list(name).await?.map(|id| (id, false))) },
                |c| c.post(&url).bearer_auth(self.token.expose()).json(&body),
                |status, headers, bytes| {
                    service::classify(status, headers, bytes)
                        .map(|v| (id_text(&v["id"]).unwrap_or_default(), true))
                },
            )
            .await?;
        if id.is_empty() {
            return Err(Error::transient(
                "pinterest: the create answer carries no customer list id",
            ));
        }
        Ok((id, created))
    }

    /// `ADD` or `REMOVE` of records.
    async fn update(&self, what: &str, list: &str, operation: &str, records: &str) -> Result<()> {
        let url = format!("{}/customer_lists/{list}", self.account);
        let body = request::update(operation, records);
        self.call(what, Method::PATCH, &url, &[], Some(&body))
            .await
            .map(|_| ())
    }

    /// The list as Pinterest describes it now (name, status).
    async fn read_list(&self, list: &str) -> Result<Value> {
        let url = format!("{}/customer_lists/{list}", self.account);
        self.call("read customer list", Method::GET, &url, &[], None)
            .await
    }

    /// The ad account's `CUSTOMER_LIST` audience of the list, created (named `name`) if there is
    /// none; its id, and whether this call created it.
    async fn targeting_audience(&self, list: &str, name: &str) -> Result<(String, bool)> {
        let url = format!("{}/audiences", self.account);
        let body = request::targeting_audience(name, list);
        let of_the_list = |a: &Value| {
            a["audience_type"] == "CUSTOMER_LIST"
                && a["rule"]["customer_list_id"].as_str() == Some(list)
        };
        let (url, of_the_list) = (&url, &of_the_list);
        let (id, created) = self
            .service
            .find_or_create(
                "create audience",
                || async move {
                    let found = self.find("list audiences", url, of_the_list).await?;
                    Ok(found.map(|id| (id, false)))
                },
                |c| c.post(url).bearer_auth(self.token.expose()).json(&body),
                |status, headers, bytes| {
                    service::classify(status, headers, bytes)
                        .map(|v| (id_text(&v["id"]).unwrap_or_default(), true))
                },
            )
            .await?;
        if id.is_empty() {
            return Err(Error::transient(
                "pinterest: the create answer carries no audience id",
            ));
        }
        Ok((id, created))
    }
}

/// Pinterest ids are digits in JSON strings; numbers are taken too.
fn id_text(v: &Value) -> Result<String> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::transient("pinterest: the answer carries no id")),
    }
}

/// The list a delivery changes: known from the start, or created by the first batch that has
/// records while the others wait for its id.
struct List {
    id: tokio::sync::Mutex<Option<String>>,
    /// The name to create it with (a list the job names by id is known from the start).
    name: Option<String>,
    list_type: &'static str,
    /// `ADD` or `REMOVE`.
    operation: &'static str,
    checkpoint: Arc<Checkpoint>,
    phase: &'static str,
    destination: String,
}

impl List {
    /// Sends one batch's records: an update of the list, or its creation with them.
    async fn send(&self, api: &Api, seq: u64, records: &str) -> Result<()> {
        let what = format!("{} batch {seq}", self.operation.to_ascii_lowercase());
        let mut id = self.id.lock().await;
        if let Some(known) = id.clone() {
            drop(id);
            return api.update(&what, &known, self.operation, records).await;
        }
        let Some(name) = &self.name else {
            return Err(Error::internal(
                "pinterest: a list given by id is known from the start",
            ));
        };
        let (created, by_this_call) = api.create_list(name, self.list_type, records).await?;
        if by_this_call {
            tracing::info!(destination = %self.destination, list = %created, "created customer list");
        } else {
            // Created by a try whose answer was lost: its records may be in it; adding them
            // again changes nothing.
            api.update(&what, &created, self.operation, records).await?;
        }
        self.checkpoint.set_session(self.phase, &created).await?;
        *id = Some(created);
        Ok(())
    }
}

/// The list a killed attempt of the phase recorded, the one the job names by id, or the one
/// found by name; `None` when an add is to create it.
async fn known_list(
    api: &Api,
    config: &PinterestConfig,
    delivery: &Delivery,
) -> Result<Option<String>> {
    let phase = delivery.op.phase();
    if let Some(id) = delivery.checkpoint.session(phase).await {
        return Ok(Some(id));
    }
    let id = match &config.audience {
        AudienceRef::Id(id) => Some(id.clone()),
        AudienceRef::Name(name) => api.find_list(name).await?,
    };
    match (&id, &config.audience) {
        (Some(id), _) => delivery.checkpoint.set_session(phase, id).await?,
        (None, AudienceRef::Name(name)) if delivery.op == Op::Remove => {
            return Err(Error::config(format!(
                "{}: ad account {} has no customer list named {name}: there is nothing to remove from",
                config.name, config.ad_account_id
            )));
        }
        (None, _) => {}
    }
    Ok(id)
}

pub async fn run(
    config: &PinterestConfig,
    _run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    let operation = match op {
        Op::Add => "ADD",
        Op::Remove => "REMOVE",
        Op::Replace => {
            return Err(Error::internal(
                "pinterest: a replace reached the sink; the job loader rejects it",
            ));
        }
    };
    let kind = config.list_type.id_kind();
    let encoder = RecordsEncoder::new(&schema, kind).ok_or_else(|| {
        Error::config(format!(
            "{}: a {} list is written from identifiers.{}, which the job does not map",
            config.name,
            config.list_type.api_name(),
            kind.kind()
        ))
    })?;
    let key = format!("destination {}", config.name);
    let token =
        secrets::platform_token(&config.access_token, &key, config.in_process_sandbox).await?;
    let api = Arc::new(Api {
        service: Service::new(
            &config.name,
            RetryPolicy::default(),
            Some(config.requests_per_second),
        )?,
        account: format!(
            "{}/v5/ad_accounts/{}",
            config.base_url, config.ad_account_id
        ),
        token,
    });
    let list = Arc::new(List {
        id: tokio::sync::Mutex::new(known_list(&api, config, delivery).await?),
        name: match &config.audience {
            AudienceRef::Name(n) => Some(n.clone()),
            AudienceRef::Id(_) => None,
        },
        list_type: config.list_type.api_name(),
        operation,
        checkpoint: delivery.checkpoint.clone(),
        phase: op.phase(),
        destination: config.name.clone(),
    });

    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    let send = |seq: u64, parts: batch::Parts, _last: bool| {
        let (api, encoder, list) = (api.clone(), encoder.clone(), list.clone());
        async move {
            let records = encoder.records(&parts);
            if records.count > 0 {
                list.send(&api, seq, &records.text).await?;
            }
            Ok(records.without_identifier)
        }
    };
    let mut sends =
        Driver::single_step(config.concurrency).start(members, config.batch, delivery, send);
    while let Some(sent) = sends.next().await {
        report.not_sent += sent?.1;
    }
    sends.progress().count_in(&mut report);
    // Every member is delivered: what follows is best-effort, and does not undo that.
    delivery.checkpoint.finish(op.phase()).await?;

    let id = list.id.lock().await.clone();
    match id {
        Some(id) => settle(&api, config, op, &id, &mut report).await,
        None => report.outputs.push(format!(
            "Pinterest: nothing sent, no member has {}",
            kind.kind()
        )),
    }
    api.service.counters.count_in(&mut report);
    Ok(report)
}

/// A best-effort step that failed after the members were delivered: a warning, and a line of
/// the report. The error's text names the call and Pinterest's word on it, its message withheld
/// when it could quote a record (`service::classify`); no value of a member is in it.
fn not_done(config: &PinterestConfig, report: &mut SinkReport, step: &str, e: &Error) {
    tracing::warn!(destination = %config.name, step, error = %e.message, "best-effort step failed; the members were delivered");
    report.outputs.push(format!(
        "could not {step}; the members were delivered: {}",
        e.message
    ));
}

/// What follows the batches, after the phase is finished: the list named in the report; after
/// an add, its audience found or created, and its status once Pinterest has matched it or the
/// wait is over. Best-effort: a failure is warned about and reported (`not_done`), not the
/// run's; make the list targetable in Ads Manager, or run again, if it was that step.
async fn settle(api: &Api, config: &PinterestConfig, op: Op, id: &str, report: &mut SinkReport) {
    report.outputs.push(format!(
        "Pinterest customer list {id} ({}) of ad account {}, {}",
        match &config.audience {
            AudienceRef::Name(n) => n.as_str(),
            AudienceRef::Id(_) => "by id",
        },
        config.ad_account_id,
        config.list_type.api_name()
    ));
    if op != Op::Add {
        return;
    }
    let list = match api.read_list(id).await {
        Ok(list) => Some(list),
        Err(e) => {
            not_done(config, report, "read the customer list's status", &e);
            None
        }
    };
    if config.make_targetable {
        let listed_name = list.as_ref().and_then(|l| l["name"].as_str());
        let name = match (&config.audience, listed_name) {
            (AudienceRef::Name(n), _) => n.clone(),
            (AudienceRef::Id(_), Some(n)) if !n.is_empty() => n.to_string(),
            (AudienceRef::Id(_), _) => format!("Customer list {id}"),
        };
        match api.targeting_audience(id, &name).await {
            Ok((audience, created)) => {
                if created {
                    tracing::info!(destination = %config.name, audience = %audience, "created audience");
                }
                report.outputs.push(format!(
                    "targeted through CUSTOMER_LIST audience {audience}{}",
                    if created { " (created)" } else { "" }
                ));
            }
            Err(e) => not_done(
                config,
                report,
                "make the list targetable (its CUSTOMER_LIST audience: create it in Ads Manager, or run again)",
                &e,
            ),
        }
    }
    let Some(list) = list else {
        return;
    };
    match matched(api, id, list, config.status_wait).await {
        Ok(list) => report.outputs.push(status_line(&list, config.status_wait)),
        Err(e) => not_done(config, report, "read the customer list's status", &e),
    }
}

/// The list once Pinterest is no longer matching it, or as it is when `wait` is over (or a
/// stop is asked for): read again after growing pauses.
async fn matched(api: &Api, id: &str, mut list: Value, wait: Duration) -> Result<Value> {
    let now = Instant::now();
    let deadline = now.checked_add(wait).unwrap_or(now);
    let mut pause = Duration::from_millis(250);
    while matches!(list["status"].as_str(), Some("PROCESSING" | "UPLOADING")) {
        let now = Instant::now();
        if now >= deadline || crate::shutdown::requested() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause.min(deadline - now)) => {}
            _ = crate::shutdown::wait() => break,
        }
        pause = (pause * 2).min(Duration::from_secs(10));
        list = api.read_list(id).await?;
    }
    Ok(list)
}

/// The list's status for the report, with what it means.
fn status_line(list: &Value, waited: Duration) -> String {
    match list["status"].as_str() {
        Some("READY") => "status READY: matched, targetable".to_string(),
        Some("TOO_SMALL") => format!(
            "status TOO_SMALL: fewer than {} Pinterest accounts matched so far, so ads cannot target it yet \
             (Pinterest's count, not an error)",
            super::TARGETABLE_MATCHES
        ),
        Some(s @ ("PROCESSING" | "UPLOADING")) => format!(
            "status {s}: Pinterest is still matching the records after {} s; it goes on without us",
            waited.as_secs()
        ),
        Some(other) => format!(
            "status {}",
            platform_message(other).unwrap_or_else(|| "withheld".to_string())
        ),
        None => "status not given".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn too_small_is_reported_as_pinterest_s_count_not_as_a_failure() {
        let wait = Duration::from_secs(60);
        let line = status_line(&json!({"status": "TOO_SMALL"}), wait);
        assert!(
            line.contains("TOO_SMALL") && line.contains("not an error"),
            "{line}"
        );
        assert!(status_line(&json!({"status": "PROCESSING"}), wait).contains("after 60 s"));
        assert_eq!(
            status_line(&json!({"status": "READY"}), wait),
            "status READY: matched, targetable"
        );
    }
}
