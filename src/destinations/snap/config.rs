//! The `type = "snap"` destination in a job file.

use crate::destinations::meta::config::AudienceRef;
use crate::destinations::settings;
use crate::error::{Error, Result};
use crate::job::{BatchLimits, Resolver};
use crate::state::SyncMode;
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
    #[serde(default)]
    pub sync: SyncMode,
    /// Days a member stays in a segment activator creates (9999: for good).
    pub retention_in_days: Option<u32>,
    pub concurrency: Option<usize>,
    /// Request rate cap (per second); default 10, Snap's average per token.
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::job::BatchFile,
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
        if self.sync == SyncMode::Replace {
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
            name: self.name.clone().unwrap_or_else(|| "snap".into()),
            ad_account_id,
            audience,
            access_token: self.access_token.clone(),
            base_url: settings::base_url(r, key, &self.base_url, DEFAULT_BASE_URL)?,
            sync: self.sync,
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
