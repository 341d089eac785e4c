//! The `type = "tiktok"` destination in a job file.

use crate::batch::BatchLimits;
use crate::destinations::SyncMode;
use crate::destinations::ids::IdKind;
use crate::destinations::settings;
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Destination, JobContext};
use crate::error::{Error, Result};
use crate::resolve::Resolver;
use serde::Deserialize;

pub const DEFAULT_BASE_URL: &str = "https://business-api.tiktok.com";
pub const DEFAULT_API_VERSION: &str = "v1.3";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TikTokFile {
    pub name: Option<String>,
    /// The advertiser (digits).
    pub advertiser_id: String,
    /// The audience's name: found in the advertiser, or created from the first files.
    pub audience: Option<String>,
    /// Or an existing audience's id.
    pub audience_id: Option<String>,
    /// Secret reference for the access token, e.g. `env:TIKTOK_ACCESS_TOKEN`.
    pub access_token: String,
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    /// `add`, `mirror`, `replace` or `remove`.
    pub sync: Option<String>,
    /// What the files hold: `EMAIL_SHA256` (default), `PHONE_SHA256`, `IDFA_SHA256` or
    /// `GAID_SHA256`. One per audience: TikTok wants every file of an audience of one type.
    pub calculate_type: Option<String>,
    /// File uploads in flight at once.
    pub concurrency: Option<usize>,
    /// Request rate cap (per second); default 10.
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

/// The identifier type of an audience's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalculateType {
    EmailSha256,
    PhoneSha256,
    IdfaSha256,
    GaidSha256,
}

impl CalculateType {
    const ALL: [CalculateType; 4] = [
        CalculateType::EmailSha256,
        CalculateType::PhoneSha256,
        CalculateType::IdfaSha256,
        CalculateType::GaidSha256,
    ];

    pub fn api_name(self) -> &'static str {
        match self {
            CalculateType::EmailSha256 => "EMAIL_SHA256",
            CalculateType::PhoneSha256 => "PHONE_SHA256",
            CalculateType::IdfaSha256 => "IDFA_SHA256",
            CalculateType::GaidSha256 => "GAID_SHA256",
        }
    }

    /// The member column the files are written from.
    pub fn id_kind(self) -> IdKind {
        match self {
            CalculateType::EmailSha256 => IdKind::Email,
            CalculateType::PhoneSha256 => IdKind::Phone,
            CalculateType::IdfaSha256 | CalculateType::GaidSha256 => IdKind::MobileAdId,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TikTokConfig {
    pub name: String,
    pub advertiser_id: String,
    pub audience: AudienceRef,
    pub access_token: String,
    /// `sandbox` means: start the sandbox in-process and use it.
    pub base_url: String,
    pub api_version: String,
    pub sync: SyncMode,
    pub calculate_type: CalculateType,
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub batch: BatchLimits,
    pub in_process_sandbox: bool,
}

impl TikTokFile {
    pub fn resolve(&self, key: &str, r: &Resolver) -> Result<TikTokConfig> {
        let at = r.at;
        let advertiser_id = settings::digits(r, key, "advertiser_id", &self.advertiser_id)?;
        let audience = settings::audience(r, key, &self.audience, &self.audience_id)?;
        if let AudienceRef::Name(n) = &audience
            && (n.is_empty() || n.chars().count() > super::MAX_NAME_CHARS)
        {
            return Err(Error::config(format!(
                "{at}: {key}.audience: TikTok audience names have 1 to {} characters",
                super::MAX_NAME_CHARS
            )));
        }
        settings::secret_reference(r, key, "access_token", &self.access_token)?;
        let calculate_type = match self.calculate_type.as_deref() {
            None => CalculateType::EmailSha256,
            Some(t) => CalculateType::ALL
                .into_iter()
                .find(|c| c.api_name() == t)
                .ok_or_else(|| {
                    Error::config(format!(
                        "{at}: {key}.calculate_type: `{t}` is not one of EMAIL_SHA256, PHONE_SHA256, IDFA_SHA256, GAID_SHA256 (activator sends SHA-256 hashes, not MD5)"
                    ))
                })?,
        };
        Ok(TikTokConfig {
            name: settings::text(r, key, "name", &self.name, "tiktok")?,
            advertiser_id,
            audience,
            access_token: self.access_token.clone(),
            base_url: settings::base_url(r, key, &self.base_url, DEFAULT_BASE_URL)?,
            api_version: settings::text(
                r,
                key,
                "api_version",
                &self.api_version,
                DEFAULT_API_VERSION,
            )?,
            sync: SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?,
            calculate_type,
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
                "lines of one file of at most 50 MB",
            )?,
            in_process_sandbox: false,
        })
    }
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    settings::needs_meta_profile(ctx, "tiktok")?;
    let file: TikTokFile = ctx.table(table)?;
    let config = file.resolve(&ctx.key, ctx.resolver)?;
    let kind = config.calculate_type.id_kind().kind();
    if !ctx.identifiers.iter().any(|i| i.kind == kind) {
        return Err(ctx.error(
            "calculate_type",
            format!(
                "{} files are written from identifiers.{kind}, which the job does not map; \
                 map it, or set calculate_type to the kind the job has (one kind per TikTok audience)",
                config.calculate_type.api_name()
            ),
        ));
    }
    Ok(Box::new(config))
}

impl Destination for TikTokConfig {
    crate::destinations::config_basics!();
    crate::destinations::one_api_basics!();

    fn single_key_kinds(&self) -> Option<Vec<IdKind>> {
        Some(vec![self.calculate_type.id_kind()])
    }

    fn secrets(&self) -> Vec<(String, &str)> {
        vec![("access_token".to_string(), self.access_token.as_str())]
    }
}
