//! The `type = "microsoft"` destination in a job file.

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

pub const DEFAULT_BASE_URL: &str = "https://campaign.api.bingads.microsoft.com";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicrosoftFile {
    pub name: Option<String>,
    /// The manager account (customer) id: the `CustomerId` header, and the parent of the lists
    /// activator creates (a customer list's only scope is `Customer`).
    pub customer_id: String,
    /// The ad account id: the `CustomerAccountId` header.
    pub account_id: String,
    /// The customer list's name: found among the customer's lists, or created.
    pub audience: Option<String>,
    /// Or an existing customer list's id.
    pub audience_id: Option<String>,
    /// Secret reference for the OAuth access token (scope `msads.manage`), e.g.
    /// `env:MSADS_ACCESS_TOKEN`.
    pub access_token: String,
    /// Secret reference for the developer token, e.g. `env:MSADS_DEVELOPER_TOKEN`.
    pub developer_token: String,
    pub base_url: Option<String>,
    /// `add`, `mirror`, `replace` (Microsoft's `Replace`) or `remove`.
    pub sync: Option<String>,
    /// true: each upload accepts the Customer Match terms (`AcceptCustomerMatchTerm: true`);
    /// false (the default): the terms must have been accepted in the Microsoft Advertising UI.
    pub accept_customer_match_terms: Option<bool>,
    /// Days a member stays in a list activator creates: -1 (the default, no expiration) or
    /// 1 to 390.
    pub membership_duration: Option<i32>,
    pub concurrency: Option<usize>,
    /// Request rate cap (per second); default 5 (Microsoft publishes none).
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub batch: crate::batch::BatchFile,
}

#[derive(Clone, Debug)]
pub struct MicrosoftConfig {
    pub name: String,
    pub customer_id: String,
    pub account_id: String,
    pub audience: AudienceRef,
    /// Secret references, never values.
    pub access_token: String,
    pub developer_token: String,
    /// `sandbox` means: start the sandbox in-process and use it.
    pub base_url: String,
    pub sync: SyncMode,
    pub accept_customer_match_terms: bool,
    pub membership_duration: i32,
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub batch: BatchLimits,
    pub in_process_sandbox: bool,
}

impl MicrosoftFile {
    pub fn resolve(&self, key: &str, r: &Resolver) -> Result<MicrosoftConfig> {
        let at = r.at;
        let audience = settings::audience(r, key, &self.audience, &self.audience_id)?;
        check_audience(&audience, key, at)?;
        let membership_duration = self.membership_duration.unwrap_or(-1);
        if membership_duration != -1
            && !(1..=super::MAX_MEMBERSHIP_DAYS).contains(&membership_duration)
        {
            return Err(Error::config(format!(
                "{at}: {key}.membership_duration: -1 (no expiration) or 1 to {} days",
                super::MAX_MEMBERSHIP_DAYS
            )));
        }
        settings::secret_reference(r, key, "access_token", &self.access_token)?;
        settings::secret_reference(r, key, "developer_token", &self.developer_token)?;
        Ok(MicrosoftConfig {
            name: settings::text(r, key, "name", &self.name, "microsoft")?,
            customer_id: settings::digits(r, key, "customer_id", &self.customer_id)?,
            account_id: settings::digits(r, key, "account_id", &self.account_id)?,
            audience,
            access_token: self.access_token.clone(),
            developer_token: self.developer_token.clone(),
            base_url: settings::base_url(r, key, &self.base_url, DEFAULT_BASE_URL)?,
            sync: SyncMode::resolve(self.sync.as_deref(), &format!("{key}.sync"), r)?,
            accept_customer_match_terms: self.accept_customer_match_terms.unwrap_or(false),
            membership_duration,
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
                super::MAX_ITEMS,
                "1,000 hashed e-mails per CustomerListUserData/Apply call",
            )?,
            in_process_sandbox: false,
        })
    }
}

/// A list name of 1 to 128 characters, or an id that is a number (Microsoft's ids are longs).
fn check_audience(audience: &AudienceRef, key: &str, at: &str) -> Result<()> {
    match audience {
        AudienceRef::Name(n)
            if n.trim().is_empty() || n.chars().count() > super::MAX_NAME_CHARS =>
        {
            Err(Error::config(format!(
                "{at}: {key}.audience: Microsoft audience names have 1 to {} characters",
                super::MAX_NAME_CHARS
            )))
        }
        AudienceRef::Id(id) if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) => {
            Err(Error::config(format!(
                "{at}: {key}.audience_id: expected the customer list's id, digits such as \"821000123\""
            )))
        }
        _ => Ok(()),
    }
}

pub fn parse(table: toml::Table, ctx: &JobContext) -> Result<Box<dyn Destination>> {
    // Microsoft asks for SHA-256 hex of the e-mail; trimmed and lowercased first as peers do
    // (UNCONFIRMED officially), which is the meta profile's e-mail, and its documented vector
    // `test@contoso.com` is that profile's hash. The google profile's Gmail rule would not match.
    settings::needs_meta_profile(ctx, "microsoft")?;
    if !ctx.identifiers.iter().any(|i| i.kind == Kind::Email) {
        return Err(ctx.error(
            "",
            "Microsoft Customer Match lists take hashed e-mails only (CRM ids and phones are not supported yet); \
             map identifiers.email",
        ));
    }
    let file: MicrosoftFile = ctx.table(table)?;
    Ok(Box::new(file.resolve(&ctx.key, ctx.resolver)?))
}

impl Destination for MicrosoftConfig {
    crate::destinations::config_basics!();
    crate::destinations::one_api_basics!();

    /// Each hashed e-mail is an entry of its own: two members sharing an e-mail are one entry,
    /// which a mirror must not remove while one of them stays.
    fn single_key_kinds(&self) -> Option<Vec<IdKind>> {
        Some(vec![IdKind::Email])
    }

    fn secrets(&self) -> Vec<(String, &str)> {
        vec![
            ("access_token".to_string(), self.access_token.as_str()),
            ("developer_token".to_string(), self.developer_token.as_str()),
        ]
    }
}
