//! The `type = "x"` destination in a job file.

use crate::batch::BatchLimits;
use crate::destinations::SyncMode;
use crate::destinations::ids::IdKind;
use crate::destinations::settings;
use crate::destinations::settings::AudienceRef;
use crate::destinations::{Destination, JobContext};
use crate::error::{Error, Result};
use crate::identity::Profile;
use crate::resolve::Resolver;
use serde::Deserialize;

/// X's Ads API host (the SDK and RudderStack still use `ads-api.twitter.com`, which serves the
/// same API).
pub const DEFAULT_BASE_URL: &str = "https://ads-api.x.com";

/// The four secret references, by their keys in the job file.
pub const SECRET_KEYS: [&str; 4] = [
    "consumer_key",
    "consumer_secret",
    "access_token",
    "access_token_secret",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XFile {
    pub name: Option<String>,
    /// The ad account's id as X shows it, e.g. `18ce54d4x5t`.
    pub account_id: String,
    /// The custom audience's name: found in the ad account, or created.
    pub audience: Option<String>,
    /// Or an existing custom audience's id.
    pub audience_id: Option<String>,
    /// Secret references of the app's API key and secret and of the user's access token and
    /// token secret (OAuth 1.0a), e.g. `env:X_CONSUMER_KEY`,
    /// `aws-secretsmanager:prod/x#access_token_secret`.
    pub consumer_key: String,
    pub consumer_secret: String,
    pub access_token: String,
    pub access_token_secret: String,
    pub base_url: Option<String>,
    /// The Ads API version in paths (default 12).
    pub api_version: Option<String>,
    /// `add`, `mirror` or `remove`; X has no replace.
    pub sync: Option<String>,
    /// Also send hashed phone numbers (default false: X's pages give no phone format).
    pub send_phones: Option<bool>,
    pub concurrency: Option<usize>,
    /// Request rate cap (per second); default 25, X's 1,500 a minute.
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

#[derive(Clone, Debug)]
pub struct XConfig {
    pub name: String,
    pub account_id: String,
    pub audience: AudienceRef,
    /// Secret references, never values.
    pub consumer_key: String,
    pub consumer_secret: String,
    pub access_token: String,
    pub access_token_secret: String,
    /// `sandbox` means: start the sandbox in-process and use it.
    pub base_url: String,
    pub api_version: String,
    pub sync: SyncMode,
    pub send_phones: bool,
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub batch: BatchLimits,
    /// Signs with the sandbox's documented credentials, whatever the references say.
    pub in_process_sandbox: bool,
}

impl XConfig {
    /// The identifier kinds sent, each as X names it in a user object: hashed e-mails and
    /// hashed mobile ad ids (`device_id`), and hashed phones when the job asks.
    pub fn kinds(&self) -> Vec<IdKind> {
        match self.send_phones {
            true => vec![IdKind::Email, IdKind::Phone, IdKind::MobileAdId],
            false => vec![IdKind::Email, IdKind::MobileAdId],
        }
    }

    /// `https://ads-api.x.com/12/accounts/{account_id}`
    pub fn account_url(&self) -> String {
        format!(
            "{}/{}/accounts/{}",
            self.base_url, self.api_version, self.account_id
        )
    }
}

impl XFile {
    pub fn resolve(&self, key: &str, r: &Resolver) -> Result<XConfig> {
        let sync = SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?;
        if sync == SyncMode::Replace {
            return Err(Error::config(format!(
                "{}: {key}.sync: X has no replace (its users endpoint updates and deletes users; effective_at and \
                 expires_at time-box a membership, they do not swap an audience); use sync = \"mirror\", which \
                 removes who left the segment and adds who joined",
                r.at
            )));
        }
        Ok(XConfig {
            name: settings::text(r, key, "name", &self.name, "x")?,
            account_id: x_id(r, key, "account_id", &self.account_id)?,
            audience: custom_audience(r, key, &self.audience, &self.audience_id)?,
            consumer_key: secret(r, key, "consumer_key", &self.consumer_key)?,
            consumer_secret: secret(r, key, "consumer_secret", &self.consumer_secret)?,
            access_token: secret(r, key, "access_token", &self.access_token)?,
            access_token_secret: secret(r, key, "access_token_secret", &self.access_token_secret)?,
            base_url: settings::base_url(r, key, &self.base_url, DEFAULT_BASE_URL)?,
            api_version: api_version(r, key, &self.api_version)?,
            sync,
            send_phones: self.send_phones.unwrap_or(false),
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
                super::MAX_USERS,
                "users per request: X takes at most 2,500 operations a request, and activator sends one user each",
            )?,
            in_process_sandbox: false,
        })
    }
}

/// A secret reference after `${VAR}` interpolation, checked for its form. Its text is never
/// shown: a secret pasted in by mistake must not reach the logs, so an interpolation error
/// (whose message quotes the text) is told without it.
fn secret(r: &Resolver, key: &str, field: &str, value: &str) -> Result<String> {
    if !value.contains("${") {
        settings::secret_reference(r, key, field, value)?;
        return Ok(value.to_string());
    }
    let reference = r
        .interpolate(value, &format!("{key}.{field}"))
        .map_err(|_| {
            Error::config(format!(
                "{}: {key}.{field}: a ${{VAR}} in it is not set or not closed (its text is not shown): \
                 set the variable, or write ${{VAR:-default}}",
                r.at
            ))
        })?;
    settings::secret_reference(r, key, field, &reference)?;
    Ok(reference)
}

/// An X id (`account_id`, `audience_id`): lowercase letters and digits.
fn x_id(r: &Resolver, key: &str, field: &str, value: &str) -> Result<String> {
    let id = r
        .interpolate(value, &format!("{key}.{field}"))?
        .trim()
        .to_string();
    check_id(&id).map_err(|what| Error::config(format!("{}: {key}.{field}: {what}", r.at)))?;
    Ok(id)
}

/// Why `id` is not an X id, if it is not.
pub fn check_id(id: &str) -> std::result::Result<(), String> {
    let plausible = !id.is_empty()
        && id.len() <= super::MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    match plausible {
        true => Ok(()),
        false => Err(format!(
            "expected an id as X shows it: lowercase letters and digits, at most {} (such as \"18ce54d4x5t\")",
            super::MAX_ID_CHARS
        )),
    }
}

/// The custom audience: `audience` (a name X can look up) or `audience_id`.
fn custom_audience(
    r: &Resolver,
    key: &str,
    name: &Option<String>,
    id: &Option<String>,
) -> Result<AudienceRef> {
    let audience = settings::audience(r, key, name, id)?;
    let problem = match &audience {
        AudienceRef::Name(n) if n.trim().is_empty() => {
            Some("audience: give the custom audience a name".to_string())
        }
        // X trims a name it is given: an untrimmed one would never be found, and a new audience
        // made on every run.
        AudienceRef::Name(n) if n.trim() != n => Some(
            "audience: the name begins or ends with white space, which X drops; write it without"
                .to_string(),
        ),
        AudienceRef::Name(n) if n.chars().count() > super::MAX_NAME_CHARS => Some(format!(
            "audience: at most {} characters (X finds audiences by name with `q`, which takes no more)",
            super::MAX_NAME_CHARS
        )),
        AudienceRef::Id(id) => check_id(id)
            .err()
            .map(|what| format!("audience_id: {what}")),
        _ => None,
    };
    match problem {
        Some(message) => Err(Error::config(format!("{}: {key}.{message}", r.at))),
        None => Ok(audience),
    }
}

/// `api_version`: digits, 12 unless the job says.
fn api_version(r: &Resolver, key: &str, value: &Option<String>) -> Result<String> {
    let version = settings::text(r, key, "api_version", value, super::API_VERSION)?;
    let version = version.trim().trim_start_matches('v').to_string();
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::config(format!(
            "{}: {key}.api_version: a version number such as \"{}\" (X's current Ads API version)",
            r.at,
            super::API_VERSION
        )));
    }
    Ok(version)
}

/// X matches SHA-256 hex of e-mails trimmed and lowercased (its example: `adsapi`, the handle
/// `@AdsAPI` so normalized, hashes to 49e0be2a…) and of IDFAs lowercased with their dashes: what
/// the meta profile writes. The google profile's gmail rule and `+`, or uid2's Base64, would
/// give hashes that never match.
fn needs_meta_profile(ctx: &JobContext) -> Result<()> {
    if ctx.profile == Profile::Meta {
        return Ok(());
    }
    Err(ctx.error(
        "",
        format!(
            "an x destination needs `profile = \"meta\"`: X matches SHA-256 hashes in lowercase hex of e-mails \
             trimmed and lowercased and of mobile ad ids lowercased with their dashes, as the meta profile writes \
             them; the job's {} profile would send hashes that never match",
            ctx.profile
        ),
    ))
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    needs_meta_profile(ctx)?;
    let file: XFile = ctx.table(table)?;
    let config = file.resolve(&ctx.key, ctx.resolver)?;
    let mapped = |kind: IdKind| ctx.identifiers.iter().any(|i| i.kind == kind.kind());
    if config.send_phones && !mapped(IdKind::Phone) {
        return Err(ctx.error(
            "send_phones",
            "phones are sent from identifiers.phone, which the job does not map; map it, or leave send_phones out",
        ));
    }
    if !config.kinds().into_iter().any(mapped) {
        return Err(ctx.error(
            "",
            "X is sent hashed e-mails and mobile ad ids (and phones with send_phones = true), and the job maps none \
             of them: map identifiers.email or identifiers.mobile_ad_id",
        ));
    }
    Ok(Box::new(config))
}

impl Destination for XConfig {
    crate::destinations::config_basics!();
    crate::destinations::one_api_basics!();

    /// X matches each identifier of a user on its own: deleting a user who left by a phone a
    /// member who stayed shares would take that member out too. So a mirror's removes leave out
    /// the identifiers current members hold, as for TikTok and Snap.
    fn single_key_kinds(&self) -> Option<Vec<IdKind>> {
        Some(self.kinds())
    }

    fn secrets(&self) -> Vec<(String, &str)> {
        let references = [
            &self.consumer_key,
            &self.consumer_secret,
            &self.access_token,
            &self.access_token_secret,
        ];
        SECRET_KEYS
            .iter()
            .zip(references)
            .map(|(key, reference)| (key.to_string(), reference.as_str()))
            .collect()
    }
}
