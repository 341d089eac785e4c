//! The `type = "ttd"` destination in a job file.

use crate::batch::BatchLimits;
use crate::destinations::SyncMode;
use crate::destinations::ids::IdKind;
use crate::destinations::settings;
use crate::destinations::{Delivery, Destination, JobContext, RunInfo, SinkReport, Target};
use crate::error::{Error, Result};
use crate::identity::{Kind, Profile};
use crate::resolve::Resolver;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Deserialize;

/// TTD's data API host the ttd-data SDK defaults to; regional hosts are `use-data`,
/// `euw-data`, `sin-data`, `tok-data` `.adsrvr.org` (platforms-more.md §B2).
pub const DEFAULT_BASE_URL: &str = "https://usw-data.adsrvr.org";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtdFile {
    pub name: Option<String>,
    /// The TTD advertiser whose first-party data the segment is.
    pub advertiser_id: String,
    /// The segment's name (each item's `Data.Name`); TTD makes the segment when it first sees it.
    pub audience: String,
    /// Secret reference for the TTD-Auth token (an advertiser's or a platform API token).
    pub auth_token: String,
    /// Secret reference for the UID2 (or EUID) API key, sent as a bearer token to the operator.
    pub uid2_api_key: String,
    /// Secret reference for the client secret issued with it (Base64 of 32 bytes).
    pub uid2_client_secret: String,
    /// `UID2` (default) or `EUID`: which operator maps, and which item key the ids go under.
    pub identity_scope: Option<String>,
    /// TTD's data API (or `sandbox`).
    pub base_url: Option<String>,
    /// The UID2 or EUID operator (or `sandbox`).
    pub uid2_base_url: Option<String>,
    /// `add`, `mirror` or `remove`; TTD has no replace.
    pub sync: Option<String>,
    /// How long a member stays in the segment unless sent again, in days (default 30).
    pub ttl_days: Option<u32>,
    /// Data requests in flight (the operator is always one request at a time).
    pub concurrency: Option<usize>,
    /// Data request rate cap (per second); TTD publishes none, so none by default.
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

/// Which identity space members are mapped into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityScope {
    Uid2,
    Euid,
}

impl IdentityScope {
    /// The scope's name in the job file, and the data API's item key for its raw ids.
    pub fn item_key(self) -> &'static str {
        match self {
            IdentityScope::Uid2 => "UID2",
            IdentityScope::Euid => "EUID",
        }
    }

    /// The production operator (platforms-more.md §B3; others are in the UID2 and EUID docs'
    /// environment lists).
    pub fn default_operator(self) -> &'static str {
        match self {
            IdentityScope::Uid2 => "https://prod.uidapi.com",
            IdentityScope::Euid => "https://prod.euid.eu",
        }
    }
}

#[derive(Clone, Debug)]
pub struct TtdConfig {
    pub name: String,
    pub advertiser_id: String,
    /// The segment's name.
    pub audience: String,
    pub auth_token: String,
    pub uid2_api_key: String,
    pub uid2_client_secret: String,
    pub identity_scope: IdentityScope,
    /// `sandbox` means: start the sandbox in-process and use it.
    pub base_url: String,
    pub uid2_base_url: String,
    pub sync: SyncMode,
    pub ttl_days: u32,
    /// The kinds the job maps among those the operator takes (e-mail, phone).
    pub kinds: Vec<IdKind>,
    pub concurrency: usize,
    pub requests_per_second: Option<f64>,
    pub batch: BatchLimits,
    /// The data API is an in-process sandbox (its token is then the sandbox's if unset).
    pub in_process_sandbox: bool,
    /// The operator is an in-process sandbox (its key and secret the sandbox's if unset).
    pub uid2_in_process_sandbox: bool,
}

impl TtdConfig {
    /// `TtlInMinutes` of an add.
    pub fn ttl_minutes(&self) -> u32 {
        self.ttl_days * super::MINUTES_PER_DAY
    }
}

impl TtdFile {
    pub fn resolve(&self, key: &str, r: &Resolver, kinds: Vec<IdKind>) -> Result<TtdConfig> {
        let sync = SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?;
        if sync == SyncMode::Replace {
            return Err(Error::config(format!(
                "{}: {key}.sync: The Trade Desk has no replace (its data API adds a member to a segment for a TTL, and \
                 removes one with TTL 0); use sync = \"mirror\", which removes who left the segment and adds who joined",
                r.at
            )));
        }
        for (field, reference) in [
            ("auth_token", &self.auth_token),
            ("uid2_api_key", &self.uid2_api_key),
            ("uid2_client_secret", &self.uid2_client_secret),
        ] {
            settings::secret_reference(r, key, field, reference)?;
        }
        let identity_scope = identity_scope(r, key, self.identity_scope.as_deref())?;
        Ok(TtdConfig {
            name: settings::text(r, key, "name", &self.name, "ttd")?,
            advertiser_id: advertiser_id(r, key, &self.advertiser_id)?,
            audience: audience(r, key, &self.audience)?,
            auth_token: self.auth_token.clone(),
            uid2_api_key: self.uid2_api_key.clone(),
            uid2_client_secret: self.uid2_client_secret.clone(),
            identity_scope,
            base_url: url(r, key, "base_url", &self.base_url, DEFAULT_BASE_URL)?,
            uid2_base_url: url(
                r,
                key,
                "uid2_base_url",
                &self.uid2_base_url,
                identity_scope.default_operator(),
            )?,
            sync,
            ttl_days: ttl_days(r, key, self.ttl_days)?,
            kinds,
            concurrency: settings::concurrency(self.concurrency),
            requests_per_second: match self.requests_per_second {
                Some(v) => Some(settings::rate(r, key, Some(v), v)?),
                None => None,
            },
            batch: settings::batch(
                r,
                key,
                &self.batch,
                super::MAX_ROWS,
                "two identifiers a member, and the UID2 operator maps at most 5,000 a request",
            )?,
            in_process_sandbox: false,
            uid2_in_process_sandbox: false,
        })
    }
}

/// A URL setting (`base_url`, `uid2_base_url`) or `sandbox`, without a trailing `/`: HTTPS,
/// plain HTTP to loopback only.
fn url(
    r: &Resolver,
    key: &str,
    field: &str,
    value: &Option<String>,
    default: &str,
) -> Result<String> {
    let url = match value {
        Some(u) => r.interpolate(u, &format!("{key}.{field}"))?,
        None => default.to_string(),
    };
    crate::destinations::check_base_url(&url)
        .map_err(|m| Error::config(format!("{}: {key}.{field}: {m}", r.at)))?;
    Ok(url.trim_end_matches('/').to_string())
}

/// `advertiser_id`: TTD's ids are letters and digits.
fn advertiser_id(r: &Resolver, key: &str, value: &str) -> Result<String> {
    let id = r.interpolate(value, &format!("{key}.advertiser_id"))?;
    let id = id.trim();
    let fits = !id.is_empty()
        && id.len() <= super::MAX_ADVERTISER_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !fits {
        return Err(Error::config(format!(
            "{}: {key}.advertiser_id: expected the advertiser's id as TTD shows it, letters and digits such as \"abc1234\"",
            r.at
        )));
    }
    Ok(id.to_string())
}

/// `audience`: the segment's name, not empty.
fn audience(r: &Resolver, key: &str, value: &str) -> Result<String> {
    let name = r.interpolate(value, &format!("{key}.audience"))?;
    if name.trim().is_empty() {
        return Err(Error::config(format!(
            "{}: {key}.audience: give the segment a name (TTD's data name; the segment is made when TTD first sees it)",
            r.at
        )));
    }
    Ok(name)
}

/// `ttl_days`: 30 unless the job says, 1 to 180.
fn ttl_days(r: &Resolver, key: &str, value: Option<u32>) -> Result<u32> {
    let days = value.unwrap_or(super::DEFAULT_TTL_DAYS);
    if !(1..=super::MAX_TTL_DAYS).contains(&days) {
        return Err(Error::config(format!(
            "{}: {key}.ttl_days: 1 to {} (a member stays in the segment this long unless sent again; removal is sent as TTL 0 \
             by sync = \"mirror\" or \"remove\", not by a ttl_days of 0)",
            r.at,
            super::MAX_TTL_DAYS
        )));
    }
    Ok(days)
}

/// `identity_scope`, after `${VAR}` interpolation: UID2 unless the job says.
fn identity_scope(r: &Resolver, key: &str, value: Option<&str>) -> Result<IdentityScope> {
    let Some(raw) = value else {
        return Ok(IdentityScope::Uid2);
    };
    match r.interpolate(raw, &format!("{key}.identity_scope"))?.trim() {
        "UID2" => Ok(IdentityScope::Uid2),
        "EUID" => Ok(IdentityScope::Euid),
        other => Err(Error::config(format!(
            "{}: {key}.identity_scope: `{other}` is not UID2 or EUID",
            r.at
        ))),
    }
}

/// The UID2 operator maps hashes of e-mails and phones as the uid2 profile writes them.
fn needs_uid2_profile(ctx: &JobContext) -> Result<()> {
    if ctx.profile == Profile::Uid2 {
        return Ok(());
    }
    Err(ctx.error(
        "",
        format!(
            "a ttd destination needs `profile = \"uid2\"` (the job's `profile` key): the UID2 operator maps Base64 SHA-256 \
             hashes of e-mails normalized by UID2's rules (gmail.com without dots and +tags) and of E.164 phones with `+`, \
             as the uid2 profile writes them; the job's {} profile would send hashes that map to nobody",
            ctx.profile
        ),
    ))
}

/// The kinds the operator takes that the job maps: e-mail and phone, at least one.
fn kinds_sent(ctx: &JobContext) -> Result<Vec<IdKind>> {
    let kinds: Vec<IdKind> = [IdKind::Email, IdKind::Phone]
        .into_iter()
        .filter(|k| ctx.identifiers.iter().any(|i| i.kind == k.kind()))
        .collect();
    if kinds.is_empty() {
        return Err(ctx.error(
            "",
            format!(
                "The Trade Desk is sent UID2s mapped from e-mails and phones: map identifiers.{} or identifiers.{}",
                Kind::Email,
                Kind::Phone
            ),
        ));
    }
    Ok(kinds)
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    needs_uid2_profile(ctx)?;
    let file: TtdFile = ctx.table(table)?;
    let config = file.resolve(&ctx.key, ctx.resolver, kinds_sent(ctx)?)?;
    // The sandbox's UID2s are keyed hashes of the identifiers with a key published here: they
    // must never reach a real Trade Desk account, nor real UID2s the sandbox.
    if (config.base_url == "sandbox") != (config.uid2_base_url == "sandbox") {
        return Err(ctx.error(
            "uid2_base_url",
            "set both base_url and uid2_base_url to `sandbox`, or neither: the sandbox's UID2s must not reach \
             a real Trade Desk account, nor a real operator's UID2s the sandbox",
        ));
    }
    Ok(Box::new(config))
}

impl Destination for TtdConfig {
    crate::destinations::config_basics!();

    /// Items expire after `ttl_days`: a mirror sends every current member again, renewing them.
    fn renews_members(&self) -> bool {
        true
    }

    /// Each identifier is a UID2 of its own: a phone two members share is one UID2.
    fn single_key_kinds(&self) -> Option<Vec<IdKind>> {
        Some(self.kinds.clone())
    }

    fn targets(&self) -> Vec<Target<'_>> {
        vec![
            Target::Api {
                field: "uid2_base_url",
                url: &self.uid2_base_url,
            },
            Target::Api {
                field: "base_url",
                url: &self.base_url,
            },
        ]
    }

    fn secrets(&self) -> Vec<(String, &str)> {
        vec![
            ("auth_token".to_string(), self.auth_token.as_str()),
            ("uid2_api_key".to_string(), self.uid2_api_key.as_str()),
            (
                "uid2_client_secret".to_string(),
                self.uid2_client_secret.as_str(),
            ),
        ]
    }

    fn use_sandbox(&mut self, url: &str) {
        settings::use_sandbox(&mut self.base_url, &mut self.in_process_sandbox, url);
        settings::use_sandbox(
            &mut self.uid2_base_url,
            &mut self.uid2_in_process_sandbox,
            url,
        );
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
