//! Job-file settings the platform destinations share, checked the same way everywhere: the
//! audience (a name or an id), the token's secret reference, the base URL, the request rate and
//! the batch size within the platform's maximum. Errors name the job file and the key.

use crate::batch::{BatchFile, BatchLimits};
use crate::destinations::JobContext;
use crate::error::{Error, Result};
use crate::identity::Profile;
use crate::resolve::Resolver;

/// A platform audience: found by name (created if missing), or given by id.
#[derive(Clone, Debug)]
pub enum AudienceRef {
    Name(String),
    Id(String),
}

/// `audience` (found by name, created if missing) or `audience_id`, exactly one of them.
pub fn audience(
    r: &Resolver,
    key: &str,
    name: &Option<String>,
    id: &Option<String>,
) -> Result<AudienceRef> {
    match (name, id) {
        (Some(n), None) => Ok(AudienceRef::Name(
            r.interpolate(n, &format!("{key}.audience"))?,
        )),
        (None, Some(id)) => Ok(AudienceRef::Id(
            r.interpolate(id, &format!("{key}.audience_id"))?,
        )),
        _ => Err(Error::config(format!(
            "{}: {key}: give either `audience` (a name, created if missing) or `audience_id`",
            r.at
        ))),
    }
}

/// An id made of digits (`advertiser_id`, `ad_account_id`), dashes dropped.
pub fn digits(r: &Resolver, key: &str, field: &str, value: &str) -> Result<String> {
    let v = r
        .interpolate(value, &format!("{key}.{field}"))?
        .replace('-', "");
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::config(format!(
            "{}: {key}.{field}: expected the account's digits, e.g. \"1234567890\"",
            r.at
        )));
    }
    Ok(v)
}

/// A secret reference's form (`env:NAME`, `aws-secretsmanager:ID#field`); never its value.
pub fn secret_reference(r: &Resolver, key: &str, field: &str, reference: &str) -> Result<()> {
    crate::destinations::secrets::check_reference(reference)
        .map_err(|m| Error::config(format!("{}: {key}.{field}: {m}", r.at)))
}

/// The base URL (or `sandbox`), without a trailing `/`: HTTPS, plain HTTP to loopback only.
pub fn base_url(r: &Resolver, key: &str, value: &Option<String>, default: &str) -> Result<String> {
    let url = match value {
        Some(u) => r.interpolate(u, &format!("{key}.base_url"))?,
        None => default.to_string(),
    };
    crate::destinations::check_base_url(&url)
        .map_err(|m| Error::config(format!("{}: {key}.base_url: {m}", r.at)))?;
    Ok(url.trim_end_matches('/').to_string())
}

/// `requests_per_second`: the job's cap, else the platform's default.
pub fn rate(r: &Resolver, key: &str, value: Option<f64>, default: f64) -> Result<f64> {
    match value {
        Some(v) if v.is_nan() || v <= 0.0 => Err(Error::config(format!(
            "{}: {key}.requests_per_second: must be above 0",
            r.at
        ))),
        v => Ok(v.unwrap_or(default)),
    }
}

/// A text setting (`name`, `api_version`) after `${VAR}` interpolation, else `default`.
pub fn text(
    r: &Resolver,
    key: &str,
    field: &str,
    value: &Option<String>,
    default: &str,
) -> Result<String> {
    match value {
        Some(v) => r.interpolate(v, &format!("{key}.{field}")),
        None => Ok(default.to_string()),
    }
}

/// Points `base_url = "sandbox"` at a running sandbox, marking it in-process (its token is
/// then the sandbox's, whatever the job file's reference says).
pub fn use_sandbox(base_url: &mut String, in_process_sandbox: &mut bool, url: &str) {
    if base_url == "sandbox" {
        *base_url = url.to_string();
        *in_process_sandbox = true;
    }
}

/// TikTok and Snap match SHA-256 hex of e-mails trimmed and lowercased and of phones as digits
/// with the country code and no `+` (shared/spec/platforms.md §9): what the meta profile writes.
/// The google profile's gmail rule and `+`, or uid2's Base64, would give hashes that never match.
pub fn needs_meta_profile(ctx: &JobContext, platform: &str) -> Result<()> {
    if ctx.profile == Profile::Meta {
        return Ok(());
    }
    Err(ctx.error(
        "",
        format!(
            "a {platform} destination needs `profile = \"meta\"`: {platform} matches hashes of e-mails \
             trimmed and lowercased and of phones as digits with the country code and no `+`, as the meta profile \
             writes them; the job's {} profile would send hashes that never match",
            ctx.profile
        ),
    ))
}

/// `concurrency`: requests in flight, 4 unless the job says.
pub fn concurrency(value: Option<usize>) -> usize {
    value.unwrap_or(4).clamp(1, 64)
}

/// The job's batch limits, rows defaulting to and capped at the platform's maximum.
pub fn batch(
    r: &Resolver,
    key: &str,
    file: &BatchFile,
    max_rows: usize,
    why: &str,
) -> Result<BatchLimits> {
    let limits = file.limits(max_rows, usize::MAX);
    if limits.max_rows > max_rows {
        return Err(Error::config(format!(
            "{}: {key}.batch.max_rows: at most {max_rows} ({why})",
            r.at
        )));
    }
    Ok(limits)
}
