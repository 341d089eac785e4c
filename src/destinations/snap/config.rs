//! The `type = "snap"` destination in a job file.

use crate::batch::BatchLimits;
use crate::destinations::SyncMode;
use crate::destinations::ids::IdKind;
use crate::destinations::settings;
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Destination, JobContext};
use crate::error::{Error, Result};
use crate::identity::Kind;
use crate::resolve::Resolver;
use serde::Deserialize;

pub const DEFAULT_BASE_URL: &str = "https://adsapi.snapchat.com";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapFile {
    pub name: Option<String>,
    /// The ad account's id (a UUID).
    pub ad_account_id: String,
    /// The segment's name: found in the ad account, or created.
    pub audience: Option<String>,
    /// Or an existing segment's id.
    pub audience_id: Option<String>,
    /// Secret reference for the OAuth access token, e.g. `env:SNAP_ACCESS_TOKEN`.
    pub access_token: String,
    pub base_url: Option<String>,
    /// `add`, `mirror` or `remove`; Snap has no replace.
    pub sync: Option<String>,
    /// Days a member stays in a segment activator creates (9999: for good).
    pub retention_in_days: Option<u32>,
    pub concurrency: Option<usize>,
    /// Request rate cap (per second); default 10, Snap's average per token.
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

#[derive(Clone, Debug)]
pub struct SnapConfig {
    pub name: String,
    pub ad_account_id: String,
    pub audience: AudienceRef,
    pub access_token: String,
    /// `sandbox` means: start the sandbox in-process and use it.
    pub base_url: String,
    pub sync: SyncMode,
    pub retention_in_days: u32,
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub batch: BatchLimits,
    pub in_process_sandbox: bool,
}

impl SnapFile {
    pub fn resolve(&self, key: &str, r: &Resolver) -> Result<SnapConfig> {
        let at = r.at;
        let sync = SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?;
        if sync == SyncMode::Replace {
            return Err(Error::config(format!(
                "{at}: {key}.sync: Snap has no replace (its API offers no atomic swap of a segment's members); \
                 use sync = \"mirror\", which removes who left the segment and adds who joined"
            )));
        }
        let ad_account_id = r.interpolate(&self.ad_account_id, &format!("{key}.ad_account_id"))?;
        if ad_account_id.is_empty()
            || !ad_account_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::config(format!(
                "{at}: {key}.ad_account_id: expected the ad account's id, a UUID such as \"8adc3db7-8148-4fbf-999c-8d2266369d74\""
            )));
        }
        let audience = settings::audience(r, key, &self.audience, &self.audience_id)?;
        if let AudienceRef::Name(n) = &audience
            && (n.is_empty() || n.chars().count() > super::MAX_NAME_CHARS)
        {
            return Err(Error::config(format!(
                "{at}: {key}.audience: Snap segment names have 1 to {} characters",
                super::MAX_NAME_CHARS
            )));
        }
        settings::secret_reference(r, key, "access_token", &self.access_token)?;
        Ok(SnapConfig {
            name: settings::text(r, key, "name", &self.name, "snap")?,
            ad_account_id,
            audience,
            access_token: self.access_token.clone(),
            base_url: settings::base_url(r, key, &self.base_url, DEFAULT_BASE_URL)?,
            sync,
            retention_in_days: self.retention_in_days.unwrap_or(9999),
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
                "100,000 identifiers per request, up to three per member",
            )?,
            in_process_sandbox: false,
        })
    }
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    settings::needs_meta_profile(ctx, "snap")?;
    if !ctx
        .identifiers
        .iter()
        .any(|i| matches!(i.kind, Kind::Email | Kind::Phone | Kind::MobileAdId))
    {
        return Err(ctx.error(
            "",
            "Snap customer lists take email, phone and mobile_ad_id; the job maps none of them",
        ));
    }
    let file: SnapFile = ctx.table(table)?;
    Ok(Box::new(file.resolve(&ctx.key, ctx.resolver)?))
}

impl Destination for SnapConfig {
    crate::destinations::config_basics!();
    crate::destinations::one_api_basics!();

    fn single_key_kinds(&self) -> Option<Vec<IdKind>> {
        Some(IdKind::ALL.to_vec())
    }

    fn secrets(&self) -> Vec<(String, &str)> {
        vec![("access_token".to_string(), self.access_token.as_str())]
    }
}
