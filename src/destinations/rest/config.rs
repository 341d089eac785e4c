//! The `type = "rest"` destination in a job file: where requests go, their headers (secrets by
//! reference), the body template, and which answers mean done or try again.

use super::request::BodyTemplate;
use crate::batch::BatchLimits;
use crate::destinations::SyncMode;
use crate::destinations::settings;
use crate::destinations::{Delivery, Destination, JobContext, RunInfo, SinkReport, Target};
use crate::error::{Error, Result};
use crate::resolve::Resolver;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Members per request unless the job says otherwise (an endpoint's limit is its own).
pub const DEFAULT_ROWS: usize = 1000;

/// The body when the job gives none.
pub const DEFAULT_BODY: &str =
    r#"{"op": {{ op | tojson }}, "batch_seq": {{ batch_seq }}, "members": {{ members | tojson }}}"#;

const METHODS: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestFile {
    pub name: Option<String>,
    /// Where batches go: `https://…` (plain HTTP to loopback only), or `sandbox`.
    pub url: String,
    /// POST (default), PUT, PATCH or DELETE.
    pub method: Option<String>,
    /// Header values are literal, or secret references resolved at run time (`env:NAME`,
    /// `aws-secretsmanager:ID#field`), optionally after a word: `Bearer env:API_TOKEN`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A minijinja template rendered per batch.
    pub body: Option<String>,
    /// Removals (mirror, remove) go here, with this method; one of them is required for them.
    pub remove_url: Option<String>,
    pub remove_method: Option<String>,
    /// Statuses that mean done (default: any 2xx): codes such as 200 or classes such as "2xx".
    pub success_status: Option<Vec<StatusPattern>>,
    /// Statuses worth a retry (default: 429 and 5xx); `Retry-After` is honoured.
    pub retry_status: Option<Vec<StatusPattern>>,
    /// `add`, `mirror` or `remove`; an endpoint has no generic replace.
    pub sync: Option<String>,
    pub concurrency: Option<usize>,
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StatusPattern {
    Code(u16),
    Class(String),
}

/// HTTP statuses as inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    fn parse(patterns: &[StatusPattern]) -> std::result::Result<StatusSet, String> {
        patterns
            .iter()
            .map(|p| match p {
                StatusPattern::Code(c) if (100..=599).contains(c) => Ok((*c, *c)),
                StatusPattern::Class(s)
                    if s.len() == 3
                        && s.ends_with("xx")
                        && matches!(s.as_bytes()[0], b'1'..=b'5') =>
                {
                    let base = u16::from(s.as_bytes()[0] - b'0') * 100;
                    Ok((base, base + 99))
                }
                other => Err(format!(
                    "{other:?} is not a status: write codes such as 200 or classes such as \"2xx\""
                )),
            })
            .collect::<std::result::Result<_, _>>()
            .map(StatusSet)
    }
}

/// A header's value: literal, or a secret reference (after an optional prefix such as `Bearer `).
#[derive(Clone, Debug)]
pub enum HeaderValue {
    Literal(String),
    Secret { prefix: String, reference: String },
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub method: reqwest::Method,
    /// `sandbox` until an in-process sandbox's address replaces it.
    pub url: String,
}

#[derive(Clone, Debug)]
pub struct RestConfig {
    pub name: String,
    pub add: Endpoint,
    /// Where removals go; `None` when the job syncs without removing.
    pub remove: Option<Endpoint>,
    pub headers: Vec<(String, HeaderValue)>,
    pub body: BodyTemplate,
    pub success_status: StatusSet,
    pub retry_status: StatusSet,
    pub sync: SyncMode,
    pub concurrency: usize,
    pub requests_per_second: Option<f64>,
    pub batch: BatchLimits,
}

impl RestFile {
    /// `job` names the job for the template; `columns` are the member columns it may use.
    pub fn resolve(
        &self,
        key: &str,
        r: &Resolver,
        job: &str,
        columns: &[String],
    ) -> Result<RestConfig> {
        let at = r.at;
        let name = settings::text(r, key, "name", &self.name, "rest")?;
        let sync = SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?;
        let endpoint = |url: &str, url_key: &str, method: Option<&str>, method_key: &str| {
            let url = r.interpolate(url, &format!("{key}.{url_key}"))?;
            crate::destinations::check_base_url(&url)
                .map_err(|m| Error::config(format!("{at}: {key}.{url_key}: {m}")))?;
            let method = method.unwrap_or("POST").to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(Error::config(format!(
                    "{at}: {key}.{method_key}: `{method}` is not one of {}",
                    METHODS.join(", ")
                )));
            }
            Ok(Endpoint {
                method: method.parse().expect("a known method"),
                url,
            })
        };
        let add = endpoint(&self.url, "url", self.method.as_deref(), "method")?;
        let remove = match (&self.remove_url, &self.remove_method) {
            (None, None) => None,
            (url, method) => Some(endpoint(
                url.as_deref().unwrap_or(&self.url),
                if url.is_some() { "remove_url" } else { "url" },
                method.as_deref().or(self.method.as_deref()),
                if method.is_some() {
                    "remove_method"
                } else {
                    "method"
                },
            )?),
        };
        match sync {
            SyncMode::Replace => {
                return Err(Error::config(format!(
                    "{at}: {key}.sync: a rest endpoint has no full replace; use sync = \"mirror\" \
                     (removes who left the segment, adds who joined) with remove_method or remove_url"
                )));
            }
            SyncMode::Mirror | SyncMode::Remove if remove.is_none() => {
                return Err(Error::config(format!(
                    "{at}: {key}.sync: `{}` removes members: set remove_method (e.g. \"DELETE\") or \
                     remove_url to say how the endpoint takes removals",
                    sync
                )));
            }
            _ => {}
        }
        let mut headers = vec![];
        for (header, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(Error::config(format!(
                    "{at}: {key}.headers: `{header}` is not a header name"
                )));
            }
            headers.push((header.clone(), header_value(r, key, header, value)?));
        }
        let statuses = |p: &Option<Vec<StatusPattern>>, field: &str, default: StatusSet| {
            p.as_ref().map_or(Ok(default), |p| {
                StatusSet::parse(p).map_err(|m| Error::config(format!("{at}: {key}.{field}: {m}")))
            })
        };
        let body = BodyTemplate::new(self.body.as_deref().unwrap_or(DEFAULT_BODY))
            .and_then(|t| t.check(job, columns).map(|_| t))
            .map_err(|m| Error::config(format!("{at}: {key}.body: {m}")))?;
        Ok(RestConfig {
            add,
            remove,
            headers,
            body,
            success_status: statuses(
                &self.success_status,
                "success_status",
                StatusSet(vec![(200, 299)]),
            )?,
            retry_status: statuses(
                &self.retry_status,
                "retry_status",
                StatusSet(vec![(429, 429), (500, 599)]),
            )?,
            sync,
            concurrency: settings::concurrency(self.concurrency),
            requests_per_second: self
                .requests_per_second
                .map(|v| settings::rate(r, key, Some(v), v))
                .transpose()?,
            batch: self.batch.limits(DEFAULT_ROWS, usize::MAX),
            name,
        })
    }
}

fn header_value(r: &Resolver, key: &str, header: &str, value: &str) -> Result<HeaderValue> {
    use crate::destinations::secrets::check_reference;
    if check_reference(value).is_ok() {
        return Ok(HeaderValue::Secret {
            prefix: String::new(),
            reference: value.to_string(),
        });
    }
    if let Some((prefix, last)) = value.rsplit_once(' ')
        && check_reference(last).is_ok()
    {
        return Ok(HeaderValue::Secret {
            prefix: format!("{prefix} "),
            reference: last.to_string(),
        });
    }
    let literal = r.interpolate(value, &format!("{key}.headers.{header}"))?;
    if reqwest::header::HeaderValue::from_str(&literal).is_err() {
        return Err(Error::config(format!(
            "{}: {key}.headers.{header}: not a valid header value (its text is not shown)",
            r.at
        )));
    }
    Ok(HeaderValue::Literal(literal))
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    let columns: Vec<String> = ctx
        .identifiers
        .iter()
        .flat_map(|i| crate::identity::output_fields(ctx.profile, i.kind))
        .map(|f| f.name)
        .chain(ctx.consent_columns.iter().cloned())
        .collect();
    let file: RestFile = ctx.table(table)?;
    Ok(Box::new(file.resolve(
        &ctx.key,
        ctx.resolver,
        ctx.job,
        &columns,
    )?))
}

impl Destination for RestConfig {
    crate::destinations::config_basics!();

    fn targets(&self) -> Vec<Target<'_>> {
        let mut targets = vec![Target::Api {
            field: "url",
            url: &self.add.url,
        }];
        if let Some(remove) = &self.remove {
            targets.push(Target::Api {
                field: "remove_url",
                url: &remove.url,
            });
        }
        targets
    }

    fn secrets(&self) -> Vec<(String, &str)> {
        self.headers
            .iter()
            .filter_map(|(header, value)| match value {
                HeaderValue::Secret { reference, .. } => {
                    Some((format!("headers.{header}"), reference.as_str()))
                }
                HeaderValue::Literal(_) => None,
            })
            .collect()
    }

    fn use_sandbox(&mut self, url: &str) {
        // The route that records the destination's requests.
        let recorder = format!("{url}/_sandbox/rest/{}", self.name);
        for e in std::iter::once(&mut self.add).chain(self.remove.as_mut()) {
            if e.url == "sandbox" {
                e.url = recorder.clone();
            }
        }
    }

    fn deliver<'a>(
        &'a self,
        run: &'a RunInfo,
        schema: SchemaRef,
        members: BoxStream<'static, Result<RecordBatch>>,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<SinkReport>> {
        Box::pin(super::sink::run(self, run, schema, members, delivery))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patterns() {
        let set = StatusSet::parse(&[StatusPattern::Code(200), StatusPattern::Class("5xx".into())])
            .unwrap();
        assert!(set.contains(200) && set.contains(503) && !set.contains(201));
        assert!(StatusSet::parse(&[StatusPattern::Class("2x".into())]).is_err());
        assert!(StatusSet::parse(&[StatusPattern::Code(42)]).is_err());
    }
}
