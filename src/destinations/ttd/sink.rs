//! The Trade Desk pipeline: each batch of members, through the shared driver, is mapped to
//! UID2s by the operator (one identity-map request at a time for the whole process, whatever
//! the concurrency) and sent to TTD's data API as items of the segment: TTL `ttl_days` for an
//! add, 0 for a removal, which also names the previous UID2 the operator gives. A batch is
//! acknowledged once TTD has answered all its requests; one resumed is mapped and sent again,
//! which adds nobody twice (an item sets a UID2's membership and TTL).
//!
//! Counted for the report: members none of whose identifiers mapped (no e-mail or phone,
//! opted out, or invalid) as not sent; identifiers the operator called invalid and items TTD
//! refused (`FailedLines`) as invalid, with masked samples; opt-outs in the destination's
//! lines. A failed line about the request as a whole stops the run.

use super::config::TtdConfig;
use super::envelope::{self, ClientSecret};
use super::request::{self, BatchIdentifiers, IdentifierColumns, SegmentData};
use super::service::{self, FailedLine, Mapping};
use crate::batch;
use crate::destinations::driver::Driver;
use crate::destinations::http::{RetryPolicy, Service};
use crate::destinations::ids::IdKind;
use crate::destinations::{Delivery, Op, RunInfo, SinkReport, secrets};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

/// Samples of invalid identifiers and refused items kept for the report.
const MAX_SAMPLES: usize = 5;
/// Mappings taken again at most this often when the operator's refresh time has passed
/// already before the batch is sent.
const MAX_MAPPINGS: usize = 3;

/// The turn of one operator: the process sends it one identity-map request at a time.
fn operator_turn(url: &str) -> Arc<tokio::sync::Mutex<()>> {
    static TURNS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(url.to_string())
        .or_default()
        .clone()
}

/// The two APIs a delivery calls.
struct Api {
    operator: Service,
    /// `{uid2_base_url}/v3/identity/map`
    map_url: String,
    api_key: secrets::Secret,
    client_secret: ClientSecret,
    turn: Arc<tokio::sync::Mutex<()>>,
    data: Service,
    /// `{base_url}/data/advertiser`
    data_url: String,
    auth_token: secrets::Secret,
    segment: SegmentData,
    items_per_request: usize,
}

impl Api {
    async fn connect(config: &TtdConfig, op: Op) -> Result<Api> {
        let key = |field: &str| format!("destination {}.{field}", config.name);
        let sandbox_operator = config.uid2_in_process_sandbox;
        let api_key =
            secrets::platform_token(&config.uid2_api_key, &key("uid2_api_key"), sandbox_operator)
                .await?;
        let client_secret = client_secret(config, &key("uid2_client_secret")).await?;
        let auth_token = secrets::platform_token(
            &config.auth_token,
            &key("auth_token"),
            config.in_process_sandbox,
        )
        .await?;
        let segment = SegmentData {
            advertiser_id: config.advertiser_id.clone(),
            name: config.audience.clone(),
            ttl_minutes: if op == Op::Remove {
                0
            } else {
                config.ttl_minutes()
            },
            item_key: config.identity_scope.item_key(),
        };
        Ok(Api {
            operator: Service::new(&config.name, RetryPolicy::default(), None)?,
            map_url: format!("{}/v3/identity/map", config.uid2_base_url),
            api_key,
            client_secret,
            turn: operator_turn(&config.uid2_base_url),
            data: Service::new(
                &config.name,
                RetryPolicy::default(),
                config.requests_per_second,
            )?,
            data_url: format!("{}/data/advertiser", config.base_url),
            auth_token,
            items_per_request: segment.items_per_request(super::MAX_DATA_REQUEST_BYTES),
            segment,
        })
    }

    /// Maps a chunk of identifiers (at most `MAX_MAP_ITEMS`), in the operator's turn. Each
    /// attempt is sealed anew (the operator refuses an old timestamp) and its answer opened
    /// with that attempt's nonce.
    async fn map_chunk(&self, what: &str, chunk: &[(IdKind, String)]) -> Result<Vec<Mapping>> {
        let request = request::map_request(chunk);
        let expected = (request.emails.len(), request.phones.len());
        let nonce: Mutex<std::result::Result<[u8; envelope::NONCE_BYTES], String>> =
            Mutex::new(Err("not sealed".into()));
        let build = |c: &reqwest::Client| {
            let now = chrono::Utc::now().timestamp_millis();
            let body = match envelope::seal(&self.client_secret, &request.json, now) {
                Ok(sealed) => {
                    *nonce.lock().unwrap() = Ok(sealed.nonce);
                    sealed.bytes
                }
                Err(why) => {
                    *nonce.lock().unwrap() = Err(why);
                    vec![]
                }
            };
            c.post(&self.map_url)
                .bearer_auth(self.api_key.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body)
        };
        let classify = |status: reqwest::StatusCode,
                        headers: &reqwest::header::HeaderMap,
                        body: &[u8]| {
            match nonce.lock().unwrap().clone() {
                Ok(n) => {
                    service::classify_map(status, headers, body, &self.client_secret, &n, expected)
                }
                Err(why) => {
                    crate::destinations::http::Verdict::Fail(format!("sealing the request: {why}"))
                }
            }
        };
        let _turn = self.turn.lock().await;
        let (emails, phones) = self
            .operator
            .call(&format!("{what}: identity map"), build, classify)
            .await?;
        Ok(in_chunk_order(chunk.len(), &request, emails, phones))
    }

    /// Maps a batch's identifiers, again if the operator's refresh time has passed already (a
    /// UID2 is not sent past it).
    async fn map_fresh(&self, what: &str, ids: &[(IdKind, String)]) -> Result<Vec<Mapping>> {
        for _ in 0..MAX_MAPPINGS {
            let mut mappings = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(super::MAX_MAP_ITEMS) {
                mappings.extend(self.map_chunk(what, chunk).await?);
            }
            if !refresh_passed(&mappings, chrono::Utc::now().timestamp()) {
                return Ok(mappings);
            }
            tracing::warn!(
                what,
                "the UID2 operator's refresh time has passed already; mapping again"
            );
        }
        Err(Error::transient(format!(
            "{what}: the UID2 operator answered refresh times already passed {MAX_MAPPINGS} times: check this machine's clock"
        )))
    }

    /// Sends UID2s to the segment, in requests within `MAX_DATA_REQUEST_BYTES`; the lines TTD
    /// refused, each with the id it was about.
    async fn send(&self, what: &str, ids: &[String]) -> Result<Vec<(FailedLine, Option<String>)>> {
        let mut refused = vec![];
        for chunk in ids.chunks(self.items_per_request) {
            let body = bytes::Bytes::from(self.segment.body(chunk));
            let lines = self
                .data
                .call(
                    what,
                    |c| {
                        c.post(&self.data_url)
                            .header("TTD-Auth", self.auth_token.expose())
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body.clone())
                    },
                    service::classify_data,
                )
                .await?;
            for line in lines {
                let sent = line
                    .item()
                    .and_then(|n| chunk.get(n.checked_sub(1)?))
                    .cloned();
                refused.push((line, sent));
            }
        }
        Ok(refused)
    }

    /// One batch: mapped, sent, counted.
    async fn deliver_batch(&self, seq: u64, op: Op, batch: BatchIdentifiers) -> Result<Outcome> {
        let what = format!("{} batch {seq}", op.phase());
        let mappings = self.map_fresh(&what, &batch.identifiers).await?;
        let mut outcome = Outcome::of_mappings(&batch, &mappings);
        let ids = uid2s(&mappings, op == Op::Remove);
        if ids.is_empty() {
            return Ok(outcome);
        }
        for (line, sent) in self.send(&what, &ids).await? {
            if let Some(advice) = line.about_the_request() {
                return Err(Error::config(format!(
                    "{}: {what}: TTD refused it: {}; {advice}",
                    self.data.name,
                    line.sample(None)
                )));
            }
            outcome.refused(line.sample(sent.as_deref()));
        }
        // Every item of a request refused is the account's doing (an advertiser not enabled for
        // UID2 or EUID, a scope that does not match the operator), not the members': a run
        // that went on would end with an empty segment and exit 0.
        if ids.len() > 1 && outcome.failed_lines >= ids.len() as u64 {
            return Err(Error::config(format!(
                "{}: {what}: TTD refused every one of its {} items; check that advertiser_id may receive {} \
                 data and that uid2_base_url is that scope's operator",
                self.data.name,
                ids.len(),
                self.segment.item_key,
            )));
        }
        outcome.sent = (ids.len() as u64).saturating_sub(outcome.failed_lines);
        Ok(outcome)
    }
}

/// The client secret: the reference resolved and read as Base64; for an in-process sandbox
/// operator whose reference is not set, the sandbox's.
async fn client_secret(config: &TtdConfig, key: &str) -> Result<ClientSecret> {
    let text = match secrets::resolve(&config.uid2_client_secret, key).await {
        Err(_) if config.uid2_in_process_sandbox => super::SANDBOX_CLIENT_SECRET.to_string(),
        other => other?.expose().to_string(),
    };
    ClientSecret::from_base64(&text).map_err(|why| Error::config(format!("{key}: {why}")))
}

/// The answers of a chunk's `email_hash` and `phone_hash` lists, back in the chunk's order.
fn in_chunk_order(
    len: usize,
    request: &request::MapRequest,
    emails: Vec<Mapping>,
    phones: Vec<Mapping>,
) -> Vec<Mapping> {
    let mut ordered = vec![Mapping::Invalid; len];
    for (place, mapping) in request.emails.iter().zip(emails) {
        ordered[*place] = mapping;
    }
    for (place, mapping) in request.phones.iter().zip(phones) {
        ordered[*place] = mapping;
    }
    ordered
}

/// Whether a mapping's refresh time is at or before `now` (seconds).
fn refresh_passed(mappings: &[Mapping], now: i64) -> bool {
    mappings
        .iter()
        .any(|m| matches!(m, Mapping::Mapped { refresh_from: Some(r), .. } if *r <= now))
}

/// The distinct UID2s to send: the current ones, and for a removal the previous ones too.
fn uid2s(mappings: &[Mapping], with_previous: bool) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut ids = vec![];
    for m in mappings {
        if let Mapping::Mapped {
            current, previous, ..
        } = m
        {
            let previous = previous.as_ref().filter(|_| with_previous);
            for id in std::iter::once(current).chain(previous) {
                if seen.insert(id.as_str()) {
                    ids.push(id.clone());
                }
            }
        }
    }
    ids
}

/// What a batch (or a delivery) came to.
#[derive(Debug, Default)]
struct Outcome {
    /// Members none of whose identifiers mapped.
    not_sent: u64,
    mapped: u64,
    opted_out: u64,
    /// Identifiers the operator called invalid (or unmapped for a reason it does not document).
    invalid: u64,
    /// UID2s TTD took.
    sent: u64,
    failed_lines: u64,
    samples: Vec<String>,
}

impl Outcome {
    /// The counts of a batch's mappings.
    fn of_mappings(batch: &BatchIdentifiers, mappings: &[Mapping]) -> Outcome {
        let mut outcome = Outcome::default();
        for (m, (_, hash)) in mappings.iter().zip(&batch.identifiers) {
            match m {
                Mapping::Mapped { .. } => outcome.mapped += 1,
                Mapping::OptedOut => outcome.opted_out += 1,
                Mapping::Invalid | Mapping::Unmapped(_) => {
                    outcome.invalid += 1;
                    let reason = match m {
                        Mapping::Unmapped(r) => r.as_str(),
                        _ => "invalid identifier",
                    };
                    outcome.sample(format!(
                        "{reason} {}",
                        crate::destinations::http::mask(hash)
                    ));
                }
            }
        }
        outcome.not_sent = batch
            .members
            .iter()
            .filter(|ids| {
                !ids.iter()
                    .any(|i| matches!(mappings[i], Mapping::Mapped { .. }))
            })
            .count() as u64;
        outcome
    }

    fn sample(&mut self, sample: String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(sample);
        }
    }

    fn refused(&mut self, sample: String) {
        self.failed_lines += 1;
        self.sample(sample);
    }

    fn add(&mut self, other: Outcome) {
        self.not_sent += other.not_sent;
        self.mapped += other.mapped;
        self.opted_out += other.opted_out;
        self.invalid += other.invalid;
        self.sent += other.sent;
        self.failed_lines += other.failed_lines;
        for s in other.samples {
            self.sample(s);
        }
    }

    fn count_in(self, report: &mut SinkReport, op: Op) {
        report.not_sent += self.not_sent;
        report.platform_invalid += self.invalid + self.failed_lines;
        report.platform_invalid_samples.extend(self.samples);
        report.outputs.push(format!(
            "{}: {} identifiers mapped, {} opted out and {} invalid (not sent); {} ids sent, {} refused by TTD",
            op.phase(),
            self.mapped,
            self.opted_out,
            self.invalid,
            self.sent,
            self.failed_lines
        ));
    }
}

pub async fn run(
    config: &TtdConfig,
    _run: &RunInfo,
    schema: SchemaRef,
    members: BoxStream<'static, Result<RecordBatch>>,
    delivery: &Delivery,
) -> Result<SinkReport> {
    let op = delivery.op;
    if op == Op::Replace {
        return Err(Error::internal(
            "ttd: a replace reached the sink; the job loader rejects it",
        ));
    }
    let columns = IdentifierColumns::new(&schema, &config.kinds).ok_or_else(|| {
        Error::config(format!(
            "{}: the members carry no e-mail or phone hash, which the UID2 operator maps",
            config.name
        ))
    })?;
    let api = Arc::new(Api::connect(config, op).await?);
    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    report.outputs.push(format!(
        "The Trade Desk segment {} of advertiser {} ({} ids, TTL {} days)",
        config.audience,
        config.advertiser_id,
        config.identity_scope.item_key(),
        config.ttl_days
    ));
    let send = |seq: u64, parts: batch::Parts, _last: bool| {
        let (api, columns) = (api.clone(), columns.clone());
        async move { api.deliver_batch(seq, op, columns.read(&parts)).await }
    };
    let mut sends =
        Driver::single_step(config.concurrency).start(members, config.batch, delivery, send);
    let mut outcome = Outcome::default();
    while let Some(sent) = sends.next().await {
        outcome.add(sent?.1);
    }
    sends.progress().count_in(&mut report);
    outcome.count_in(&mut report, op);
    delivery.checkpoint.finish(op.phase()).await?;
    count_requests(&api, &mut report);
    Ok(report)
}

/// Both services' requests and retries.
fn count_requests(api: &Api, report: &mut SinkReport) {
    use std::sync::atomic::Ordering::Relaxed;
    for counters in [&api.operator.counters, &api.data.counters] {
        report.requests += counters.requests.load(Relaxed);
        report.retries += counters.retries.load(Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(current: &str, previous: Option<&str>, refresh_from: i64) -> Mapping {
        Mapping::Mapped {
            current: current.into(),
            previous: previous.map(str::to_string),
            refresh_from: Some(refresh_from),
        }
    }

    #[test]
    fn a_removal_sends_the_previous_uid2_too_and_each_id_once() {
        let mappings = vec![
            mapped("u1", Some("p1"), 100),
            Mapping::OptedOut,
            mapped("u2", None, 100),
            mapped("u1", Some("p1"), 100),
        ];
        assert_eq!(uid2s(&mappings, false), ["u1", "u2"]);
        assert_eq!(uid2s(&mappings, true), ["u1", "p1", "u2"]);
        assert!(!refresh_passed(&mappings, 99));
        assert!(refresh_passed(&mappings, 100));
    }

    #[test]
    fn members_whose_identifiers_all_failed_are_not_sent_and_samples_are_masked() {
        let parts = vec![
            RecordBatch::try_from_iter([
                (
                    "email_sha256",
                    Arc::new(arrow::array::StringArray::from(vec![
                        Some("e-opted-out"),
                        Some("e-ok"),
                        None,
                        Some("e-bad"),
                    ])) as arrow::array::ArrayRef,
                ),
                (
                    "phone_sha256",
                    Arc::new(arrow::array::StringArray::from(vec![
                        Some("p-ok"),
                        None,
                        None,
                        None,
                    ])) as arrow::array::ArrayRef,
                ),
            ])
            .unwrap(),
        ];
        let columns =
            IdentifierColumns::new(&parts[0].schema(), &[IdKind::Email, IdKind::Phone]).unwrap();
        let batch = columns.read(&parts);
        // Identifiers in order: e-opted-out, e-ok, e-bad, p-ok.
        let mappings = vec![
            Mapping::OptedOut,
            mapped("u-ok", None, i64::MAX),
            Mapping::Invalid,
            mapped("u-phone", None, i64::MAX),
        ];
        let outcome = Outcome::of_mappings(&batch, &mappings);
        assert_eq!(
            (
                outcome.mapped,
                outcome.opted_out,
                outcome.invalid,
                outcome.not_sent
            ),
            (2, 1, 1, 2),
            "the member with no identifier and the one whose only e-mail was invalid"
        );
        assert_eq!(outcome.samples, ["invalid identifier (5 chars, not shown)"]);
    }

    #[test]
    fn answers_go_back_to_the_chunk_s_order() {
        let chunk = vec![
            (IdKind::Phone, "p".to_string()),
            (IdKind::Email, "e".to_string()),
        ];
        let request = request::map_request(&chunk);
        let ordered = in_chunk_order(
            2,
            &request,
            vec![mapped("ue", None, 1)],
            vec![Mapping::OptedOut],
        );
        assert_eq!(ordered, [Mapping::OptedOut, mapped("ue", None, 1)]);
    }

    #[test]
    fn one_operator_is_one_turn_for_the_process() {
        let a = operator_turn("https://prod.uidapi.com");
        let b = operator_turn("https://prod.uidapi.com");
        let c = operator_turn("https://prod.euid.eu");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
