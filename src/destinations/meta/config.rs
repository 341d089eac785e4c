//! The `type = "meta"` destination in a job file.

use crate::batch::BatchLimits;
use crate::destinations::SyncMode;
use crate::destinations::settings::{self, AudienceRef};
use crate::destinations::{Destination, JobContext};
use crate::error::{Error, Result};
use crate::resolve::Resolver;
use serde::Deserialize;

/// Graph API version the connector speaks by default.
pub const DEFAULT_API_VERSION: &str = "v25.0";
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaFile {
    pub name: Option<String>,
    /// The ad account (digits, without `act_`).
    pub ad_account_id: String,
    /// The audience's name: found in the account, or created.
    pub audience: Option<String>,
    /// Or an existing audience's id.
    pub audience_id: Option<String>,
    /// Secret reference for the access token, e.g. `env:META_ACCESS_TOKEN`.
    pub access_token: String,
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    /// `add`, `mirror`, `replace` or `remove` (`operation` is its older name).
    #[serde(alias = "operation")]
    pub sync: Option<String>,
    pub customer_file_source: Option<String>,
    /// Requests in flight at once.
    pub concurrency: Option<usize>,
    /// Request rate cap (per second).
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

#[derive(Clone, Debug)]
pub struct MetaConfig {
    pub name: String,
    pub ad_account_id: String,
    pub audience: AudienceRef,
    pub access_token: String,
    /// `sandbox` means: start the sandbox in-process and use it.
    pub base_url: String,
    pub api_version: String,
    pub sync: SyncMode,
    pub customer_file_source: String,
    pub concurrency: usize,
    pub requests_per_second: Option<f64>,
    pub batch: BatchLimits,
    /// Set when `base_url = "sandbox"` was replaced by an in-process sandbox's address.
    pub in_process_sandbox: bool,
}

impl MetaFile {
    pub fn resolve(&self, key: &str, r: &Resolver) -> Result<MetaConfig> {
        let at = r.at;
        let ad_account_id = r.interpolate(&self.ad_account_id, &format!("{key}.ad_account_id"))?;
        let ad_account_id = ad_account_id.trim_start_matches("act_").to_string();
        if ad_account_id.is_empty() || !ad_account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::config(format!(
                "{at}: {key}.ad_account_id: expected the account's digits, e.g. \"1234567890\""
            )));
        }
        let audience = match (&self.audience, &self.audience_id) {
            (Some(n), None) => AudienceRef::Name(r.interpolate(n, &format!("{key}.audience"))?),
            (None, Some(id)) => AudienceRef::Id(r.interpolate(id, &format!("{key}.audience_id"))?),
            _ => {
                return Err(Error::config(format!(
                    "{at}: {key}: give either `audience` (a name, created if missing) or `audience_id`"
                )));
            }
        };
        crate::destinations::secrets::check_reference(&self.access_token)
            .map_err(|m| Error::config(format!("{at}: {key}.access_token: {m}")))?;
        let base_url = match &self.base_url {
            Some(u) => r.interpolate(u, &format!("{key}.base_url"))?,
            None => DEFAULT_BASE_URL.to_string(),
        };
        crate::destinations::check_base_url(&base_url)
            .map_err(|m| Error::config(format!("{at}: {key}.base_url: {m}")))?;
        let batch = self
            .batch
            .limits(crate::destinations::meta::MAX_ROWS, usize::MAX);
        if batch.max_rows > crate::destinations::meta::MAX_ROWS {
            return Err(Error::config(format!(
                "{at}: {key}.batch.max_rows: Meta takes at most {} rows per request",
                crate::destinations::meta::MAX_ROWS
            )));
        }
        Ok(MetaConfig {
            name: settings::text(r, key, "name", &self.name, "meta")?,
            ad_account_id,
            audience,
            access_token: self.access_token.clone(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_version: settings::text(
                r,
                key,
                "api_version",
                &self.api_version,
                DEFAULT_API_VERSION,
            )?,
            sync: SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?,
            customer_file_source: self
                .customer_file_source
                .clone()
                .unwrap_or_else(|| "USER_PROVIDED_ONLY".into()),
            concurrency: self.concurrency.unwrap_or(4).clamp(1, 64),
            requests_per_second: match self.requests_per_second {
                Some(r) if r.is_nan() || r <= 0.0 => {
                    return Err(Error::config(format!(
                        "{at}: {key}.requests_per_second: must be above 0"
                    )));
                }
                r => r,
            },
            batch,
            in_process_sandbox: false,
        })
    }
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    if ctx.profile != crate::identity::Profile::Meta {
        return Err(ctx.error(
            "",
            format!(
                "a meta destination needs `profile = \"meta\"` (the job uses {})",
                ctx.profile
            ),
        ));
    }
    let file: MetaFile = ctx.table(table)?;
    Ok(Box::new(file.resolve(&ctx.key, ctx.resolver)?))
}

impl Destination for MetaConfig {
    crate::destinations::config_basics!();
    crate::destinations::one_api_basics!();

    fn secrets(&self) -> Vec<(String, &str)> {
        vec![("access_token".to_string(), self.access_token.as_str())]
    }
}
