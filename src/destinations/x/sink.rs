//! The X pipeline: the custom audience found by name in the ad account (or by the id a killed
//! attempt recorded, or the job's `audience_id`, checked to be the account's), created if
//! missing (a create whose answer was lost is found by name, not made twice); then each batch is
//! one users request of `Update` (add) or `Delete` (remove) operations through the shared driver.
//!
//! Every request is signed when it is built, so each try has its own nonce and timestamp. A
//! batch is acknowledged only when X's answer counts every user sent; an answer counting fewer is
//! retried, as X asks, and after `SHORT_COUNT_TRIES` such answers the run stops naming the batch.
//! When an answer says the rate window is spent (`x-rate-limit-remaining: 0`), no request starts
//! before `x-rate-limit-reset`; a 429 waits for the same.

use super::config::XConfig;
use super::oauth::{Credentials, Signer};
use super::request::{Operation, UsersEncoder};
use super::service;
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service, Verdict};
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::stream::BoxStream;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use url::Url;

/// The rate window X's answers describe: once one says it is spent, when it resets.
#[derive(Default)]
struct RateWindow {
    resume_at: Mutex<Option<Instant>>,
}

impl RateWindow {
    /// Takes in an answer's rate headers.
    fn observe(&self, headers: &HeaderMap, destination: &str) {
        let Some(wait) = service::spent_window_wait(headers, SystemTime::now()) else {
            return;
        };
        if wait.is_zero() {
            return;
        }
        let now = Instant::now();
        let at = now + wait;
        let mut resume_at = self.resume_at.lock().unwrap();
        if resume_at.is_none_or(|t| t <= now) {
            tracing::debug!(
                destination,
                wait_ms = wait.as_millis() as u64,
                "X's rate window is spent (x-rate-limit-remaining 0): waiting for x-rate-limit-reset"
            );
        }
        if resume_at.is_none_or(|t| t < at) {
            *resume_at = Some(at);
        }
    }

    /// Waits until the spent window resets (or a stop is asked for).
    async fn wait(&self) {
        let resume_at = *self.resume_at.lock().unwrap();
        let Some(at) = resume_at else {
            return;
        };
        let now = Instant::now();
        if at > now {
            tokio::select! {
                _ = tokio::time::sleep(at - now) => {}
                _ = crate::shutdown::wait() => {}
            }
        }
    }
}

struct Api {
    service: Service,
    /// `https://ads-api.x.com/12/accounts/{account_id}`
    account: String,
    credentials: Credentials,
    signer: Signer,
    window: RateWindow,
    destination: String,
}

impl Api {
    /// A URL below the ad account's, with a query.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = Url::parse(&format!("{}/{path}", self.account)).map_err(|e| {
            Error::config(format!(
                "{}: base_url, account_id: not a URL: {e}",
                self.destination
            ))
        })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// A request signed for this try; a JSON body goes unsigned, as OAuth 1.0a has it.
    fn request(
        &self,
        client: &reqwest::Client,
        method: &Method,
        url: &Url,
        body: Option<&Bytes>,
    ) -> reqwest::RequestBuilder {
        let mut request = client.request(method.clone(), url.clone());
        match self.signer.authorization(method.as_str(), url) {
            Ok(authorization) => request = request.header(AUTHORIZATION, authorization),
            // Unsigned, it is refused with an answer that says so.
            Err(e) => {
                tracing::warn!(destination = %self.destination, "cannot sign the X request: {e}")
            }
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        request
    }

    /// What an answer means, its rate headers taken in and any credential kept out of it.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict<Value> {
        self.window.observe(headers, &self.destination);
        match service::classify(status, headers, body) {
            Verdict::Fail(why) => Verdict::Fail(self.credentials.redact(&why)),
            Verdict::Retry { after, why } => Verdict::Retry {
                after,
                why: self.credentials.redact(&why),
            },
            done => done,
        }
    }

    /// A request without a body, once the rate window allows.
    async fn call(&self, what: &str, method: Method, url: &Url) -> Result<Value> {
        self.window.wait().await;
        self.service
            .call(
                what,
                |c| self.request(c, &method, url, None),
                |status, headers, body| self.classify(status, headers, body),
            )
            .await
    }

    /// The id of the ad account's custom audience named `name`, if there is one (`q` matches a
    /// prefix of the name, case-insensitively: the exact name is picked from the pages).
    async fn find(&self, name: &str) -> Result<Option<String>> {
        let count = super::PAGE_SIZE.to_string();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("q", name), ("count", count.as_str())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let url = self.url("custom_audiences", &query)?;
            let page = self
                .call("list custom audiences", Method::GET, &url)
                .await?;
            let found = page["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["name"].as_str() == Some(name) && a["deleted"] != true);
            if let Some(found) = found {
                return id_text(&found["id"]).map(Some);
            }
            match page["next_cursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
                _ => return Ok(None),
            }
        }
    }

    /// Creates the custom audience `name`, and never twice: a create whose answer was lost is
    /// looked up before it is tried again. Its id, and whether this call created it.
    async fn create(&self, name: &str) -> Result<(String, bool)> {
        let url = self.url("custom_audiences", &[("name", name)])?;
        self.window.wait().await;
        let (id, created) = self
            .service
            .find_or_create(
                "create custom audience",
                || async move { Ok(self.find(name).await?.map(|id| (id, false))) },
                |c| self.request(c, &Method::POST, &url, None),
                |status, headers, body| {
                    self.classify(status, headers, body)
                        .map(|v| (id_text(&v["data"]["id"]).unwrap_or_default(), true))
                },
            )
            .await?;
        if id.is_empty() {
            return Err(Error::transient(
                "x: the create answer carries no custom audience id",
            ));
        }
        Ok((id, created))
    }

    /// Checks that the custom audience the job names by id is the account's and not deleted.
    async fn check(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("custom_audiences/{id}"), &[])?;
        let audience = self.call("read custom audience", Method::GET, &url).await?;
        if audience["data"]["deleted"] == true {
            return Err(Error::config(format!(
                "{}: X custom audience {id} is deleted: give a live audience's audience_id, or a name as audience",
                self.destination
            )));
        }
        Ok(())
    }

    /// One users request of `sent` users; done when X's answer counts them all.
    async fn users(&self, what: &str, url: &Url, body: Bytes, sent: u64) -> Result<()> {
        self.window.wait().await;
        let short_answers = AtomicU32::new(0);
        self.service
            .call(
                what,
                |c| self.request(c, &Method::POST, url, Some(&body)),
                |status, headers, bytes| match self.classify(status, headers, bytes) {
                    Verdict::Done(answer) => match service::counted(&answer, sent) {
                        Ok(()) => Verdict::Done(()),
                        Err(why) => counted_short(&short_answers, why),
                    },
                    other => other.map(|_| ()),
                },
            )
            .await
    }
}

/// An answer that counts fewer users than were sent: retried, as X asks, until
/// `SHORT_COUNT_TRIES` answers have said so; then permanent.
fn counted_short(short_answers: &AtomicU32, why: String) -> Verdict<()> {
    let tries = short_answers.fetch_add(1, Ordering::Relaxed) + 1;
    if tries < super::SHORT_COUNT_TRIES {
        return Verdict::Retry { after: None, why };
    }
    Verdict::Fail(format!(
        "{why}, {tries} times; X applies a batch whole or not at all, so none of it is known to be in the audience: \
         run the job again, and if X keeps counting short, ask X about the audience"
    ))
}

/// X ids are strings; numbers are taken too.
fn id_text(v: &Value) -> Result<String> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::transient("x: the answer carries no id")),
    }
}

/// The four credentials: the references resolved, or for an in-process sandbox its documented
/// ones (it verifies signatures, and knows no others).
async fn credentials(config: &XConfig) -> Result<Credentials> {
    if config.in_process_sandbox {
        use super::{
            SANDBOX_ACCESS_TOKEN, SANDBOX_ACCESS_TOKEN_SECRET, SANDBOX_CONSUMER_KEY,
            SANDBOX_CONSUMER_SECRET,
        };
        return Ok(Credentials::new(
            SANDBOX_CONSUMER_KEY,
            SANDBOX_CONSUMER_SECRET,
            SANDBOX_ACCESS_TOKEN,
            SANDBOX_ACCESS_TOKEN_SECRET,
        ));
    }
    let resolve = |field: &str, reference: &str| {
        let key = format!("destination {}.{field}", config.name);
        let reference = reference.to_string();
        async move { secrets::resolve(&reference, &key).await }
    };
    Ok(Credentials {
        consumer_key: resolve("consumer_key", &config.consumer_key).await?,
        consumer_secret: resolve("consumer_secret", &config.consumer_secret).await?,
        access_token: resolve("access_token", &config.access_token).await?,
        access_token_secret: resolve("access_token_secret", &config.access_token_secret).await?,
    })
}

/// The audience a delivery changes: the one a killed attempt of the phase recorded, the one the
/// job names by id, or the one found by name, created for an add. Its id, and whether this run
/// created it.
async fn audience(api: &Api, config: &XConfig, delivery: &Delivery) -> Result<(String, bool)> {
    let phase = delivery.op.phase();
    if let Some(id) = delivery.checkpoint.session(phase).await {
        return Ok((id, false));
    }
    let (id, created) = match &config.audience {
        AudienceRef::Id(id) => {
            api.check(id).await?;
            (id.clone(), false)
        }
        AudienceRef::Name(name) => match api.find(name).await? {
            Some(id) => (id, false),
            None if delivery.op == Op::Remove => {
                return Err(Error::config(format!(
                    "{}: ad account {} has no custom audience named {name}: there is nothing to remove from",
                    config.name, config.account_id
                )));
            }
            None => api.create(name).await?,
        },
    };
    if created {
        tracing::info!(destination = %config.name, audience = %id, "created custom audience");
    }
    delivery.checkpoint.set_session(phase, &id).await?;
    Ok((id, created))
}

pub async fn run(
    config: &XConfig,
    _run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    let (operation, verb) = match op {
        Op::Add => (Operation::Update, "add"),
        Op::Remove => (Operation::Delete, "remove"),
        Op::Replace => {
            return Err(Error::internal(
                "x: a replace reached the sink; the job loader rejects it",
            ));
        }
    };
    let encoder = UsersEncoder::new(&schema, &config.kinds()).ok_or_else(|| {
        Error::config(format!(
            "{}: X is sent hashed e-mails, mobile ad ids{}, and the members carry none of them",
            config.name,
            if config.send_phones {
                " and phones"
            } else {
                ""
            }
        ))
    })?;
    let credentials = credentials(config).await?;
    let api = Arc::new(Api {
        service: Service::new(
            &config.name,
            RetryPolicy::default(),
            Some(config.requests_per_second),
        )?,
        account: config.account_url(),
        signer: Signer::new(&credentials),
        credentials,
        window: RateWindow::default(),
        destination: config.name.clone(),
    });
    let (audience, created) = audience(&api, config, delivery).await?;
    let url = Arc::new(api.url(&format!("custom_audiences/{audience}/users"), &[])?);

    let send = |seq: u64, parts: batch::Parts, _last: bool| {
        let (api, encoder, url) = (api.clone(), encoder.clone(), url.clone());
        async move {
            let users = encoder.users(&parts, operation);
            drop(parts);
            if users.count > 0 {
                let what = format!("{verb} batch {seq}");
                api.users(&what, &url, Bytes::from(users.body), users.count)
                    .await?;
            }
            Ok(users.without_identifier)
        }
    };
    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    let mut sends =
        Driver::single_step(config.concurrency).start(members, config.batch, delivery, send);
    while let Some(sent) = sends.next().await {
        report.not_sent += sent?.1;
    }
    sends.progress().count_in(&mut report);
    delivery.checkpoint.finish(op.phase()).await?;
    api.service.counters.count_in(&mut report);
    report.outputs.push(format!(
        "X custom audience {audience} ({}) of ad account {}{}",
        match &config.audience {
            AudienceRef::Name(n) => n.as_str(),
            AudienceRef::Id(_) => "by id",
        },
        config.account_id,
        if created { " (created)" } else { "" }
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_counting_short_is_retried_then_refused() {
        let short = AtomicU32::new(0);
        let why = || "X counted 9 of the 10 users sent".to_string();
        for _ in 1..super::super::SHORT_COUNT_TRIES {
            assert!(matches!(
                counted_short(&short, why()),
                Verdict::Retry { after: None, .. }
            ));
        }
        match counted_short(&short, why()) {
            Verdict::Fail(m) => assert!(
                m.starts_with("X counted 9 of the 10 users sent, 3 times") && m.contains("whole"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_spent_window_holds_requests_until_it_resets() {
        let window = RateWindow::default();
        let reset = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 2;
        let mut headers = HeaderMap::new();
        headers.insert("x-rate-limit-remaining", "0".parse().unwrap());
        headers.insert("x-rate-limit-reset", reset.to_string().parse().unwrap());
        window.observe(&headers, "x");
        let at = window.resume_at.lock().unwrap().expect("a resume time");
        let wait = at - Instant::now();
        assert!(wait > std::time::Duration::from_millis(900), "{wait:?}");
        headers.insert("x-rate-limit-remaining", "7".parse().unwrap());
        window.observe(&headers, "x");
        assert_eq!(*window.resume_at.lock().unwrap(), Some(at), "unchanged");
    }
}
