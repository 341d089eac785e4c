//! The `type = "pinterest"` destination in a job file.

use crate::batch::BatchLimits;
use crate::destinations::SyncMode;
use crate::destinations::ids::IdKind;
use crate::destinations::settings;
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Destination, JobContext};
use crate::error::{Error, Result};
use crate::resolve::Resolver;
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_BASE_URL: &str = "https://api.pinterest.com";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinterestFile {
    pub name: Option<String>,
    /// The ad account (digits).
    pub ad_account_id: String,
    /// The customer list's name: found in the ad account, or created with the first records.
    pub audience: Option<String>,
    /// Or an existing customer list's id.
    pub audience_id: Option<String>,
    /// Secret reference for the OAuth access token (a user's, with `ads:read` and `ads:write`),
    /// e.g. `env:PINTEREST_ACCESS_TOKEN`.
    pub access_token: String,
    pub base_url: Option<String>,
    /// `add`, `mirror` or `remove`; Pinterest has no replace.
    pub sync: Option<String>,
    /// What the list holds: `EMAIL` (default), `MAID` or `IDFA`. One kind per list.
    pub list_type: Option<String>,
    /// After an add, make the list targetable with a `CUSTOMER_LIST` audience (default true).
    pub make_targetable: Option<bool>,
    /// How long an add waits for Pinterest to match the list before reporting its status
    /// (default 60; 0 reads it once).
    pub status_wait_seconds: Option<u64>,
    pub concurrency: Option<usize>,
    /// Request rate cap (per second); default 100, Pinterest's Standard tier per user and app.
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

/// The kind of records a list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    Email,
    Maid,
    Idfa,
}

impl ListType {
    const ALL: [ListType; 3] = [ListType::Email, ListType::Maid, ListType::Idfa];

    /// Pinterest's `list_type`.
    pub fn api_name(self) -> &'static str {
        match self {
            ListType::Email => "EMAIL",
            ListType::Maid => "MAID",
            ListType::Idfa => "IDFA",
        }
    }

    /// The member column the records are written from: e-mail hashes as the meta profile
    /// writes them, mobile ad ids hashed here (Pinterest takes them hashed only).
    pub fn id_kind(self) -> IdKind {
        match self {
            ListType::Email => IdKind::Email,
            ListType::Maid | ListType::Idfa => IdKind::MobileAdId,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PinterestConfig {
    pub name: String,
    pub ad_account_id: String,
    /// The customer list.
    pub audience: AudienceRef,
    pub access_token: String,
    /// `sandbox` means: start the sandbox in-process and use it.
    pub base_url: String,
    pub sync: SyncMode,
    pub list_type: ListType,
    pub make_targetable: bool,
    pub status_wait: Duration,
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub batch: BatchLimits,
    pub in_process_sandbox: bool,
}

impl PinterestFile {
    pub fn resolve(&self, key: &str, r: &Resolver) -> Result<PinterestConfig> {
        let sync = SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?;
        if sync == SyncMode::Replace {
            return Err(Error::config(format!(
                "{}: {key}.sync: Pinterest has no replace (its API adds records to a customer list and removes them; \
                 a list cannot be swapped whole); use sync = \"mirror\", which removes who left the segment and adds who joined",
                r.at
            )));
        }
        settings::secret_reference(r, key, "access_token", &self.access_token)?;
        Ok(PinterestConfig {
            name: settings::text(r, key, "name", &self.name, "pinterest")?,
            ad_account_id: ad_account_id(r, key, &self.ad_account_id)?,
            audience: customer_list(r, key, &self.audience, &self.audience_id)?,
            access_token: self.access_token.clone(),
            base_url: settings::base_url(r, key, &self.base_url, DEFAULT_BASE_URL)?,
            sync,
            list_type: list_type(r, key, self.list_type.as_deref())?,
            make_targetable: self.make_targetable.unwrap_or(true),
            status_wait: status_wait(r, key, self.status_wait_seconds)?,
            concurrency: settings::concurrency(self.concurrency),
            requests_per_second: settings::rate(
                r,
                key,
                self.requests_per_second,
                super::DEFAULT_REQUESTS_PER_SECOND,
            )?,
            batch: settings::batch(
                r,
                key,
                &self.batch,
                super::MAX_ROWS,
                "records per request: Pinterest documents none; 50,000 is the known figure",
            )?,
            in_process_sandbox: false,
        })
    }
}

/// `status_wait_seconds`: how long an add waits for the list's matching, at most an hour.
fn status_wait(r: &Resolver, key: &str, value: Option<u64>) -> Result<Duration> {
    let seconds = value.unwrap_or(super::DEFAULT_STATUS_WAIT_SECONDS);
    if seconds > super::MAX_STATUS_WAIT_SECONDS {
        return Err(Error::config(format!(
            "{}: {key}.status_wait_seconds: at most {} (Pinterest may take longer to match a list; \
             the run only reports the status it sees, and the list goes on matching without it)",
            r.at,
            super::MAX_STATUS_WAIT_SECONDS
        )));
    }
    Ok(Duration::from_secs(seconds))
}

/// `ad_account_id`: Pinterest's are digits, at most 18.
fn ad_account_id(r: &Resolver, key: &str, value: &str) -> Result<String> {
    let id = settings::digits(r, key, "ad_account_id", value)?;
    if id.len() > super::MAX_ID_DIGITS {
        return Err(Error::config(format!(
            "{}: {key}.ad_account_id: Pinterest ad account ids have at most {} digits",
            r.at,
            super::MAX_ID_DIGITS
        )));
    }
    Ok(id)
}

/// The customer list: `audience` (a name) or `audience_id` (digits).
fn customer_list(
    r: &Resolver,
    key: &str,
    name: &Option<String>,
    id: &Option<String>,
) -> Result<AudienceRef> {
    let list = settings::audience(r, key, name, id)?;
    let problem = match &list {
        AudienceRef::Name(n) if n.trim().is_empty() => {
            Some("audience: give the customer list a name".to_string())
        }
        AudienceRef::Id(id)
            if id.is_empty()
                || id.len() > super::MAX_ID_DIGITS
                || !id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(format!(
                "audience_id: expected a customer list's id, up to {} digits such as \"643\"",
                super::MAX_ID_DIGITS
            ))
        }
        _ => None,
    };
    match problem {
        Some(message) => Err(Error::config(format!("{}: {key}.{message}", r.at))),
        None => Ok(list),
    }
}

/// `list_type`, after `${VAR}` interpolation: EMAIL unless the job says.
fn list_type(r: &Resolver, key: &str, value: Option<&str>) -> Result<ListType> {
    let Some(raw) = value else {
        return Ok(ListType::Email);
    };
    let named = r.interpolate(raw, &format!("{key}.list_type"))?;
    ListType::ALL
        .into_iter()
        .find(|t| t.api_name() == named.trim())
        .ok_or_else(|| {
            Error::config(format!(
                "{}: {key}.list_type: `{}` is not one of EMAIL, MAID, IDFA (activator sends hashed e-mails or hashed \
                 mobile ad ids; Pinterest's LR_ID, DLX_ID and HASHED_PINNER_ID lists take ids a job does not have)",
                r.at,
                named.trim()
            ))
        })
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    settings::needs_meta_profile(ctx, "pinterest")?;
    let file: PinterestFile = ctx.table(table)?;
    let config = file.resolve(&ctx.key, ctx.resolver)?;
    let kind = config.list_type.id_kind().kind();
    if !ctx.identifiers.iter().any(|i| i.kind == kind) {
        return Err(ctx.error(
            "list_type",
            format!(
                "a {} list is written from identifiers.{kind}, which the job does not map; \
                 map it, or set list_type to the kind the job has (one kind per Pinterest customer list)",
                config.list_type.api_name()
            ),
        ));
    }
    Ok(Box::new(config))
}

impl Destination for PinterestConfig {
    crate::destinations::config_basics!();
    crate::destinations::one_api_basics!();

    fn single_key_kinds(&self) -> Option<Vec<IdKind>> {
        Some(vec![self.list_type.id_kind()])
    }

    fn secrets(&self) -> Vec<(String, &str)> {
        vec![("access_token".to_string(), self.access_token.as_str())]
    }
}
