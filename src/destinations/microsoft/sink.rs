//! The Microsoft pipeline: the customer list found by name among the customer's lists (or by
//! the id a killed attempt recorded), created if missing; then the members with an e-mail, cut
//! into batches of up to 1,000, each one `CustomerListUserData/Apply` through the shared driver.
//! A replace sends its first batch alone as `Replace` (which empties the list and adds the
//! batch) and every other after it as `Add`, so the list ends as the segment; the checkpoint
//! keeps the first batch's acknowledgement, so a resumed replace never empties the list again.
//! A replace none of whose members has an e-mail is refused before the list is found or
//! created. Items Microsoft refuses (`PartialErrors`) are counted with masked samples, not
//! retried.

use super::config::MicrosoftConfig;
use super::request::{self, Action, ItemsEncoder};
use super::service;
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service, mask};
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::HeaderValue;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Samples of refused items kept for the report.
const MAX_SAMPLES: usize = 5;

struct Api {
    service: Service,
    /// `https://campaign.api.bingads.microsoft.com/CampaignManagement/v13`
    root: String,
    token: secrets::Secret,
    /// Marked sensitive, as the bearer token is: kept out of any debug output of the request.
    developer_token: HeaderValue,
    customer_id: String,
    account_id: String,
}

impl Api {
    async fn new(config: &MicrosoftConfig) -> Result<Api> {
        let key = format!("destination {}", config.name);
        let sandbox = config.in_process_sandbox;
        let token = secrets::platform_token(
            &config.access_token,
            &format!("{key}: access_token"),
            sandbox,
        )
        .await?;
        let developer = secrets::platform_token(
            &config.developer_token,
            &format!("{key}: developer_token"),
            sandbox,
        )
        .await?;
        let mut developer_token = HeaderValue::from_str(developer.expose()).map_err(|_| {
            Error::config(format!(
                "{key}: developer_token: the secret is not a valid HTTP header value (its text is not shown): check the secret"
            ))
        })?;
        developer_token.set_sensitive(true);
        Ok(Api {
            service: Service::new(
                &config.name,
                RetryPolicy::default(),
                Some(config.requests_per_second),
            )?,
            root: format!("{}/{}", config.base_url, super::API_ROOT),
            token,
            developer_token,
            customer_id: config.customer_id.clone(),
            account_id: config.account_id.clone(),
        })
    }

    /// A `POST` of `operation` (`CustomerListUserData/Apply`) with the headers every call takes.
    fn post(
        &self,
        client: &reqwest::Client,
        operation: &str,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        client
            .post(format!("{}/{operation}", self.root))
            .bearer_auth(self.token.expose())
            .header("DeveloperToken", self.developer_token.clone())
            .header("CustomerId", self.customer_id.as_str())
            .header("CustomerAccountId", self.account_id.as_str())
            .json(body)
    }

    async fn call(&self, what: &str, operation: &str, body: &Value) -> Result<Value> {
        self.service
            .call(what, |c| self.post(c, operation, body), service::classify)
            .await
    }

    /// The id of the customer's list named `name`, if there is one.
    async fn find(&self, name: &str) -> Result<Option<String>> {
        let query = request::customer_lists_query();
        let answer = self
            .call("find customer list", "Audiences/QueryByIds", &query)
            .await?;
        let found = answer["Audiences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["Type"].as_str().is_none_or(|t| t == "CustomerList"))
            .find(|a| a["Name"].as_str() == Some(name));
        match found {
            None => Ok(None),
            Some(list) => service::long_text(&list["Id"]).map(Some).ok_or_else(|| {
                Error::transient(format!(
                    "{}: the customer list in the answer carries no id",
                    self.service.name
                ))
            }),
        }
    }

    /// Creates the list, unless a try whose answer was lost did (`find_or_create` looks first).
    /// A name Microsoft says is taken (4853) is looked up once more; when no customer list of
    /// the customer has it, something the job cannot use holds it (another type of audience, a
    /// list out of the token's sight), and no retry changes that: a configuration error.
    async fn create(&self, config: &MicrosoftConfig, name: &str) -> Result<String> {
        let body =
            request::new_customer_list(name, &config.customer_id, config.membership_duration);
        let created = self
            .service
            .find_or_create(
                "create customer list",
                || async move { Ok(self.find(name).await?.map(service::Created::Id)) },
                |c| self.post(c, "Audiences", &body),
                service::classify_created,
            )
            .await?;
        let id = match created {
            service::Created::Id(id) => id,
            service::Created::NameTaken(why) => match self.find(name).await? {
                Some(id) => id,
                None => {
                    return Err(Error::config(format!(
                        "{}: create customer list {name:?}: Microsoft says the name is taken ({why}), but customer {} \
                         has no customer list of that name the token's user can see: another audience (not a customer \
                         list, or out of this user's reach) holds it. Rename the audience (`audience`), or give the \
                         list's id as `audience_id`",
                        config.name, config.customer_id
                    )));
                }
            },
        };
        tracing::info!(destination = %config.name, list = %id, "created customer list");
        Ok(id)
    }
}

/// What a call's items become: a replace's first batch replaces, the batches after it add.
fn action_of(op: Op, seq: u64) -> Action {
    match op {
        Op::Add => Action::Add,
        Op::Remove => Action::Remove,
        Op::Replace if seq == 1 => Action::Replace,
        Op::Replace => Action::Add,
    }
}

/// Items Microsoft refused, over the calls.
#[derive(Default)]
struct Refused {
    count: u64,
    /// Masked: their length only.
    samples: Vec<String>,
}

impl Refused {
    fn of(answer: &Value, items: &[String]) -> Refused {
        let indexes = service::refused_items(answer);
        Refused {
            count: indexes.len() as u64,
            samples: indexes
                .iter()
                .filter_map(|i| items.get(*i))
                .take(MAX_SAMPLES)
                .map(|item| mask(item))
                .collect(),
        }
    }

    fn add(&mut self, other: Refused) {
        self.count += other.count;
        let room = MAX_SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }
}

/// The list this phase sends to: the one its killed attempt used, the one the job names by id,
/// or the one found (or created) by name.
async fn customer_list(api: &Api, config: &MicrosoftConfig, delivery: &Delivery) -> Result<String> {
    let phase = delivery.op.phase();
    if let Some(id) = delivery.checkpoint.session(phase).await {
        return Ok(id);
    }
    match &config.audience {
        AudienceRef::Id(id) => Ok(id.clone()),
        AudienceRef::Name(name) => match api.find(name).await? {
            Some(id) => Ok(id),
            None if delivery.op == Op::Remove => Err(Error::config(format!(
                "{}: customer {} has no customer list named {name}: there is nothing to remove from",
                config.name, config.customer_id
            ))),
            None => api.create(config, name).await,
        },
    }
}

pub async fn run(
    config: &MicrosoftConfig,
    _run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    let phase = op.phase();
    let checkpoint = &delivery.checkpoint;
    let encoder = ItemsEncoder::new(&schema)?;
    let api = Arc::new(Api::new(config).await?);

    // A replace with no member to send would empty the list: refused before the list is found
    // or created. The first batch with an e-mail is read to know, then put back in front.
    let without_email = Arc::new(AtomicU64::new(0));
    let mut with_email = request::with_email_only(members, without_email.clone());
    let members = match with_email.next().await {
        Some(Ok(first)) => futures::stream::once(async { Ok(first) })
            .chain(with_email)
            .boxed(),
        Some(Err(e)) => return Err(e),
        None if op == Op::Replace => {
            return Err(Error::guard(format!(
                "{}: no member of the segment has an e-mail; refusing to replace the customer list with nothing",
                config.name
            )));
        }
        None => with_email,
    };

    let list = customer_list(&api, config, delivery).await?;
    checkpoint.set_session(phase, &list).await?;

    let list_id = Arc::new(list.clone());
    let accept_terms = config.accept_customer_match_terms;
    let send = |seq: u64, parts: batch::Parts, _last: bool| {
        let (api, encoder, list_id) = (api.clone(), encoder.clone(), list_id.clone());
        let action = action_of(op, seq);
        async move {
            let items = encoder.items(&batch::concat(parts)?);
            let body = request::apply_body(action, &list_id, &items, accept_terms);
            let what = format!("{} batch {seq}", action.name());
            let answer = api.call(&what, "CustomerListUserData/Apply", &body).await?;
            Ok(Refused::of(&answer, &items))
        }
    };
    // A replace's first call empties the list: it goes alone, before any `Add`.
    let driver = Driver {
        first_alone: op == Op::Replace,
        ..Driver::single_step(config.concurrency)
    };
    let mut refused = Refused::default();
    let mut sends = driver.start(members, config.batch, delivery, send);
    while let Some(sent) = sends.next().await {
        refused.add(sent?.1);
    }
    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    sends.progress().count_in(&mut report);
    checkpoint.finish(phase).await?;
    api.service.counters.count_in(&mut report);
    report.platform_invalid = refused.count;
    report.platform_invalid_samples = refused.samples;
    report.not_sent = without_email.load(Ordering::Relaxed);
    report.outputs.push(format!(
        "Microsoft customer list {list} ({}) of customer {}, account {}",
        match &config.audience {
            AudienceRef::Name(n) => n.as_str(),
            AudienceRef::Id(_) => "by id",
        },
        config.customer_id,
        config.account_id
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replace_replaces_with_its_first_call_and_adds_with_the_rest() {
        assert_eq!(action_of(Op::Replace, 1), Action::Replace);
        assert_eq!(action_of(Op::Replace, 2), Action::Add);
        assert_eq!(action_of(Op::Add, 1), Action::Add);
        assert_eq!(action_of(Op::Remove, 3), Action::Remove);
    }

    #[test]
    fn refused_items_are_counted_with_masked_samples() {
        let items: Vec<String> = (0..8).map(|i| format!("{i}").repeat(64)).collect();
        let answer = serde_json::json!({"PartialErrors": (0..7).map(|i| serde_json::json!({
            "Code": 8004, "ErrorCode": "EmailMustBeHashed", "Index": i,
        })).collect::<Vec<_>>()});
        let mut refused = Refused::of(&answer, &items);
        refused.add(Refused::of(&answer, &items));
        assert_eq!(refused.count, 14);
        assert_eq!(refused.samples.len(), MAX_SAMPLES);
        assert!(
            refused.samples.iter().all(|s| !s.contains("000")),
            "{:?}",
            refused.samples
        );
    }
}
