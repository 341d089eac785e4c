//! The `type = "google"` destination in a job file.

use crate::batch::BatchLimits;
use crate::destinations::{Destination, JobContext};
use crate::destinations::{SyncMode, settings};
use crate::error::{Error, Result};
use crate::identity::Kind;

use crate::resolve::Resolver;
use serde::Deserialize;

pub const DEFAULT_BASE_URL: &str = "https://datamanager.googleapis.com";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleFile {
    pub name: Option<String>,
    /// GOOGLE_ADS (default), DISPLAY_VIDEO_PARTNER, DISPLAY_VIDEO_ADVERTISER, DATA_PARTNER.
    pub account_type: Option<String>,
    /// The operating account's id (digits).
    pub account_id: String,
    /// A manager account to log in through, if any.
    pub login_account_id: Option<String>,
    /// The user list's display name: found, or created.
    pub user_list: Option<String>,
    /// Or an existing user list's id.
    pub user_list_id: Option<String>,
    /// Secret reference for the OAuth access token, e.g. `env:GOOGLE_ACCESS_TOKEN`.
    pub access_token: String,
    pub base_url: Option<String>,
    /// `add`, `mirror`, `replace` or `remove` (`operation` is its older name).
    #[serde(alias = "operation")]
    pub sync: Option<String>,
    /// Job-wide consent: `granted` or `denied` for each signal; per-member consent columns
    /// (the job's `[consent]`) override it.
    #[serde(default)]
    pub consent: ConsentFile,
    pub concurrency: Option<usize>,
    /// Default 300: the Data Manager's per-project ingestion quota per minute.
    pub requests_per_minute: Option<f64>,
    /// A replace removes members last added this many seconds before the run started (default
    /// 120), so a local clock ahead of Google's cannot remove what the run itself ingests.
    pub replace_clock_margin_secs: Option<u64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentFile {
    pub ad_user_data: Option<ConsentStatus>,
    pub ad_personalization: Option<ConsentStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Granted,
    Denied,
}

impl ConsentStatus {
    pub fn api_name(self) -> &'static str {
        match self {
            ConsentStatus::Granted => "CONSENT_GRANTED",
            ConsentStatus::Denied => "CONSENT_DENIED",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GoogleConfig {
    pub name: String,
    pub account_type: String,
    pub account_id: String,
    pub login_account_id: Option<String>,
    pub user_list: crate::destinations::settings::AudienceRef,
    pub access_token: String,
    pub base_url: String,
    pub sync: SyncMode,
    pub ad_user_data: Option<ConsentStatus>,
    pub ad_personalization: Option<ConsentStatus>,
    pub concurrency: usize,
    pub requests_per_minute: f64,
    pub replace_clock_margin_secs: u64,
    pub batch: BatchLimits,
    pub in_process_sandbox: bool,
}

const ACCOUNT_TYPES: &[&str] = &[
    "GOOGLE_ADS",
    "DISPLAY_VIDEO_PARTNER",
    "DISPLAY_VIDEO_ADVERTISER",
    "DATA_PARTNER",
];

impl GoogleFile {
    pub fn resolve(&self, key: &str, r: &Resolver) -> Result<GoogleConfig> {
        use crate::destinations::settings::AudienceRef;
        let at = r.at;
        let account_type = self
            .account_type
            .clone()
            .unwrap_or_else(|| "GOOGLE_ADS".into());
        if !ACCOUNT_TYPES.contains(&account_type.as_str()) {
            return Err(Error::config(format!(
                "{at}: {key}.account_type: `{account_type}` is not one of {}",
                ACCOUNT_TYPES.join(", ")
            )));
        }
        let digits = |s: &str, k: &str| -> Result<String> {
            let v = r.interpolate(s, &format!("{key}.{k}"))?.replace('-', "");
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::config(format!(
                    "{at}: {key}.{k}: expected the account's digits"
                )));
            }
            Ok(v)
        };
        let account_id = digits(&self.account_id, "account_id")?;
        let login_account_id = self
            .login_account_id
            .as_deref()
            .map(|l| digits(l, "login_account_id"))
            .transpose()?;
        let user_list = match (&self.user_list, &self.user_list_id) {
            (Some(n), None) => AudienceRef::Name(r.interpolate(n, &format!("{key}.user_list"))?),
            (None, Some(id)) => AudienceRef::Id(r.interpolate(id, &format!("{key}.user_list_id"))?),
            _ => {
                return Err(Error::config(format!(
                    "{at}: {key}: give either `user_list` (a name, created if missing) or `user_list_id`"
                )));
            }
        };
        crate::destinations::secrets::check_reference(&self.access_token)
            .map_err(|m| Error::config(format!("{at}: {key}.access_token: {m}")))?;
        let base_url = match &self.base_url {
            Some(u) => r.interpolate(u, &format!("{key}.base_url"))?,
            None => DEFAULT_BASE_URL.into(),
        };
        crate::destinations::check_base_url(&base_url)
            .map_err(|m| Error::config(format!("{at}: {key}.base_url: {m}")))?;
        let batch = self.batch.limits(super::MAX_MEMBERS, usize::MAX);
        if batch.max_rows > super::MAX_MEMBERS {
            return Err(Error::config(format!(
                "{at}: {key}.batch.max_rows: the Data Manager takes at most {} members per request",
                super::MAX_MEMBERS
            )));
        }
        Ok(GoogleConfig {
            name: settings::text(r, key, "name", &self.name, "google")?,
            account_type,
            account_id,
            login_account_id,
            user_list,
            access_token: self.access_token.clone(),
            base_url: base_url.trim_end_matches('/').to_string(),
            sync: SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?,
            ad_user_data: self.consent.ad_user_data,
            ad_personalization: self.consent.ad_personalization,
            concurrency: self.concurrency.unwrap_or(4).clamp(1, 64),
            requests_per_minute: match self.requests_per_minute {
                Some(r) if r.is_nan() || r <= 0.0 => {
                    return Err(Error::config(format!(
                        "{at}: {key}.requests_per_minute: must be above 0"
                    )));
                }
                r => r.unwrap_or(300.0),
            },
            replace_clock_margin_secs: match self.replace_clock_margin_secs {
                Some(m) if m > 86_400 => {
                    return Err(Error::config(format!(
                        "{at}: {key}.replace_clock_margin_secs: at most 86400 (a day); the default is 120"
                    )));
                }
                m => m.unwrap_or(120),
            },
            batch,
            in_process_sandbox: false,
        })
    }
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    if ctx.profile != crate::identity::Profile::Google {
        return Err(ctx.error(
            "",
            format!(
                "a google destination needs `profile = \"google\"` (the job uses {})",
                ctx.profile
            ),
        ));
    }
    if let Some(i) = ctx
        .identifiers
        .iter()
        .find(|i| matches!(i.kind, Kind::MobileAdId | Kind::ExternalId))
    {
        return Err(ctx.error(
            "",
            format!(
                "the google destination uploads contact information (email, phone, name and address) to Customer Match lists; \
                 {} lists are not supported yet: remove identifiers.{}",
                i.kind, i.kind
            ),
        ));
    }
    let file: GoogleFile = ctx.table(table)?;
    Ok(Box::new(file.resolve(&ctx.key, ctx.resolver)?))
}

impl Destination for GoogleConfig {
    crate::destinations::config_basics!();
    crate::destinations::one_api_basics!();

    fn secrets(&self) -> Vec<(String, &str)> {
        vec![("access_token".to_string(), self.access_token.as_str())]
    }
}
