//! The `type = "linkedin"` destination in a job file.

use crate::batch::BatchLimits;
use crate::destinations::SyncMode;
use crate::destinations::ids::IdKind;
use crate::destinations::settings::{self, AudienceRef};
use crate::destinations::{Destination, JobContext};
use crate::error::{Error, Result};
use crate::identity::Kind;
use crate::resolve::Resolver;
use serde::Deserialize;

pub const DEFAULT_BASE_URL: &str = "https://api.linkedin.com";
/// The `LinkedIn-Version` sent by default: the month Segment's connector pins (RudderStack's is
/// 202603). LinkedIn sunsets a version about a year after its release, so this one around April
/// 2027: `api_version` sets a newer one.
pub const DEFAULT_API_VERSION: &str = "202604";

/// The prefix of a sponsored ad account's URN.
pub const ACCOUNT_URN: &str = "urn:li:sponsoredAccount:";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkedInFile {
    pub name: Option<String>,
    /// The sponsored ad account: its digits, or `urn:li:sponsoredAccount:{digits}`.
    pub ad_account_id: String,
    /// The DMP segment's name: found in the ad account, or created.
    pub audience: Option<String>,
    /// Or an existing DMP segment's id.
    pub audience_id: Option<String>,
    /// The `sourcePlatform` value LinkedIn assigned the app when it approved it for the
    /// Audiences program; needed to create a segment.
    pub source_platform: Option<String>,
    /// Secret reference for the OAuth access token, e.g. `env:LINKEDIN_ACCESS_TOKEN`.
    pub access_token: String,
    pub base_url: Option<String>,
    /// The `LinkedIn-Version` header: `YYYYMM` or `YYYYMM.RR`.
    pub api_version: Option<String>,
    /// `add`, `mirror` or `remove`; LinkedIn has no replace.
    pub sync: Option<String>,
    pub concurrency: Option<usize>,
    /// Request rate cap (per second); default 8, under the users endpoint's 500 a minute.
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

#[derive(Clone, Debug)]
pub struct LinkedInConfig {
    pub name: String,
    /// The sponsored ad account's digits.
    pub ad_account_id: String,
    pub audience: AudienceRef,
    pub source_platform: Option<String>,
    pub access_token: String,
    /// `sandbox` means: start the sandbox in-process and use it.
    pub base_url: String,
    pub api_version: String,
    pub sync: SyncMode,
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub batch: BatchLimits,
    pub in_process_sandbox: bool,
}

impl LinkedInConfig {
    /// `urn:li:sponsoredAccount:{digits}`, as LinkedIn names the ad account.
    pub fn account_urn(&self) -> String {
        format!("{ACCOUNT_URN}{}", self.ad_account_id)
    }
}

impl LinkedInFile {
    pub fn resolve(&self, key: &str, r: &Resolver) -> Result<LinkedInConfig> {
        let at = r.at;
        let sync = SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?;
        if sync == SyncMode::Replace {
            return Err(Error::config(format!(
                "{at}: {key}.sync: LinkedIn has no replace (a DMP segment takes ADD and REMOVE elements only); \
                 use sync = \"mirror\", which removes who left the segment and adds who joined"
            )));
        }
        let audience = settings::audience(r, key, &self.audience, &self.audience_id)?;
        match &audience {
            AudienceRef::Name(n) if n.trim().is_empty() => {
                return Err(Error::config(format!(
                    "{at}: {key}.audience: a DMP segment's name cannot be empty"
                )));
            }
            AudienceRef::Id(id) if !is_digits(id) => {
                return Err(Error::config(format!(
                    "{at}: {key}.audience_id: expected the DMP segment's numeric id, e.g. \"10804\""
                )));
            }
            _ => {}
        }
        let source_platform = self.checked_source_platform(key, r)?;
        if matches!(audience, AudienceRef::Name(_)) && source_platform.is_none() {
            return Err(Error::config(format!(
                "{at}: {key}.source_platform: needed with `audience` (a name, created if missing): LinkedIn \
                 creates a DMP segment only with the sourcePlatform value it assigned your app when it approved \
                 it for the Audiences program (ask your LinkedIn contact); or give `audience_id`, an existing segment's id"
            )));
        }
        settings::secret_reference(r, key, "access_token", &self.access_token)?;
        let api_version = settings::text(
            r,
            key,
            "api_version",
            &self.api_version,
            DEFAULT_API_VERSION,
        )?;
        if !is_version(&api_version) {
            return Err(Error::config(format!(
                "{at}: {key}.api_version: `{api_version}` is not a LinkedIn-Version: use YYYYMM or YYYYMM.RR, e.g. \"{DEFAULT_API_VERSION}\""
            )));
        }
        Ok(LinkedInConfig {
            name: settings::text(r, key, "name", &self.name, "linkedin")?,
            ad_account_id: self.account_digits(key, r)?,
            audience,
            source_platform,
            access_token: self.access_token.clone(),
            base_url: settings::base_url(r, key, &self.base_url, DEFAULT_BASE_URL)?,
            api_version,
            sync,
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
                super::MAX_ELEMENTS,
                "LinkedIn takes 5,000 elements per request, one a member",
            )?,
            in_process_sandbox: false,
        })
    }

    /// The account's digits, from its digits or its URN.
    fn account_digits(&self, key: &str, r: &Resolver) -> Result<String> {
        let v = r.interpolate(&self.ad_account_id, &format!("{key}.ad_account_id"))?;
        let v = v.trim();
        let digits = v.strip_prefix(ACCOUNT_URN).unwrap_or(v);
        if !is_digits(digits) {
            return Err(Error::config(format!(
                "{}: {key}.ad_account_id: expected the sponsored ad account's id, e.g. \"508123456\" or \"{ACCOUNT_URN}508123456\"",
                r.at
            )));
        }
        Ok(digits.to_string())
    }

    /// `source_platform`, an enum in capitals, if the job gives it.
    fn checked_source_platform(&self, key: &str, r: &Resolver) -> Result<Option<String>> {
        let Some(raw) = &self.source_platform else {
            return Ok(None);
        };
        let v = r
            .interpolate(raw, &format!("{key}.source_platform"))?
            .trim()
            .to_string();
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Error::config(format!(
                "{}: {key}.source_platform: expected the enum value LinkedIn assigned your app, in capitals and `_`, e.g. \"MY_COMPANY\"",
                r.at
            )));
        }
        Ok(Some(v))
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYYMM` or `YYYYMM.RR`.
fn is_version(v: &str) -> bool {
    let (month, revision) = match v.split_once('.') {
        Some((m, r)) => (m, Some(r)),
        None => (v, None),
    };
    month.len() == 6
        && is_digits(month)
        && matches!(
            &month[4..],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        )
        && revision.is_none_or(|r| r.len() == 2 && is_digits(r))
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    settings::needs_meta_profile(ctx, "linkedin")?;
    if !ctx
        .identifiers
        .iter()
        .any(|i| matches!(i.kind, Kind::Email | Kind::MobileAdId))
    {
        return Err(ctx.error(
            "",
            "LinkedIn DMP segments take email (sent as SHA256_EMAIL) and mobile_ad_id (sent as GOOGLE_AID); \
             the job maps neither: map one under [identifiers]",
        ));
    }
    let file: LinkedInFile = ctx.table(table)?;
    Ok(Box::new(file.resolve(&ctx.key, ctx.resolver)?))
}

impl Destination for LinkedInConfig {
    crate::destinations::config_basics!();
    crate::destinations::one_api_basics!();

    /// An element is one member, but LinkedIn keeps and removes user IDs ("a 201 is returned if
    /// you ... remove an already deleted ID"): removing a member who left by an e-mail hash a
    /// member who stayed shares would take that member out too. So a mirror's removes leave out
    /// the IDs current members hold, as for Snap and TikTok.
    fn single_key_kinds(&self) -> Option<Vec<IdKind>> {
        Some(vec![IdKind::Email, IdKind::MobileAdId])
    }

    fn secrets(&self) -> Vec<(String, &str)> {
        vec![("access_token".to_string(), self.access_token.as_str())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_months_with_an_optional_revision() {
        for ok in ["202604", "202612.01", "202301"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in ["2026-04", "202613", "20264", "202604.1", "v202604", ""] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
