//! Job files (`jobs/*.toml`): parsing, `${VAR}` interpolation, and checks that name the file,
//! the key and what is expected.
//!
//! Parsing is strict (unknown keys and wrong types are errors with a line and column, courtesy
//! of the `toml` crate); strings are kept as written and interpolated afterwards, so an unset
//! variable is reported against the key that uses it. Relative paths are relative to the job
//! file's folder. Secrets never live here: destinations name them by reference.

use crate::error::{Error, Result};
use crate::identity::{InputColumn, Kind, Profile, Region};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use url::Url;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    /// Defaults to the file's stem.
    name: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
    /// Path of the segment's SQL file.
    segment: String,
    profile: Profile,
    /// ISO alpha-2 region for rows without a (known) country.
    default_region: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    tables: Vec<TableFile>,
    identifiers: BTreeMap<Kind, IdentifierFile>,
    #[serde(default)]
    consent: BTreeMap<ConsentRole, String>,
    #[serde(default)]
    destinations: Vec<DestinationFile>,
    /// Where sync state, checkpoints and run reports live (`s3://bucket/prefix` or a folder).
    state: Option<String>,
    /// Days of finished runs' files kept in the state store (see `Job::state_keep_days`).
    state_keep_days: Option<u32>,
    /// See `Job::send_adds_while_reading`.
    send_adds_while_reading: Option<bool>,
    #[serde(default)]
    guards: GuardsFile,
    /// How `activator stack` deploys the job; `run` ignores it.
    #[serde(default)]
    aws: crate::stack::settings::AwsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardsFile {
    allow_empty: Option<bool>,
    max_removal_share: Option<f64>,
}

/// Safety stops checked before anything is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guards {
    /// Send (or replace with) an empty segment rather than stop.
    pub allow_empty: bool,
    /// A mirror run that would remove more than this share of a destination's audience stops.
    pub max_removal_share: f64,
}

impl Default for Guards {
    fn default() -> Guards {
        Guards {
            allow_empty: false,
            max_removal_share: 0.5,
        }
    }
}

/// The state folder when a job names none and `ACTIVATOR_STATE` is unset: `.activator/state` in
/// the working directory.
pub const DEFAULT_STATE: &str = ".activator/state";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    name: String,
    url: String,
    #[serde(default)]
    format: TableFormat,
    #[serde(default)]
    partitions: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    #[default]
    Parquet,
    Csv,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdentifierFile {
    Column(String),
    Detailed(IdentifierDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifierDetail {
    column: String,
    #[serde(default)]
    hashed: bool,
}

/// Consent signals a platform takes per member (Google's `adUserData`, `adPersonalization`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentRole {
    AdUserData,
    AdPersonalization,
}

impl ConsentRole {
    pub fn name(self) -> &'static str {
        match self {
            ConsentRole::AdUserData => "ad_user_data",
            ConsentRole::AdPersonalization => "ad_personalization",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum DestinationFile {
    Export(ExportFile),
    Meta(crate::destinations::meta::config::MetaFile),
    Google(crate::destinations::google::config::GoogleFile),
    #[serde(rename = "tiktok")]
    TikTok(crate::destinations::tiktok::config::TikTokFile),
    Snap(crate::destinations::snap::config::SnapFile),
    Rest(crate::destinations::rest::config::RestFile),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFile {
    name: Option<String>,
    url: String,
    #[serde(default)]
    format: ExportFormat,
    #[serde(default)]
    layout: ExportLayout,
    #[serde(default)]
    batch: BatchFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    pub max_rows: Option<usize>,
    pub max_bytes: Option<usize>,
}

impl BatchFile {
    /// The limits, with a destination's defaults for what the job leaves out.
    pub fn limits(&self, rows: usize, bytes: usize) -> BatchLimits {
        BatchLimits {
            max_rows: self.max_rows.unwrap_or(rows).max(1),
            max_bytes: self.max_bytes.unwrap_or(bytes).max(1),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    #[default]
    Parquet,
    Csv,
    Ndjson,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportLayout {
    /// One file for the whole run.
    #[default]
    PerRun,
    /// One file per batch.
    PerBatch,
}

/// A table the segment reads.
#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub url: Url,
    pub format: TableFormat,
    pub partitions: Vec<String>,
}

/// Size limits of a destination's batches. A pending run stores the limits it cut its batches
/// with, so a resume cuts the same batches whatever the job file says by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct BatchLimits {
    pub max_rows: usize,
    /// Estimated encoded size of a batch's identifiers.
    pub max_bytes: usize,
}

/// Where members go.
#[derive(Clone, Debug)]
pub enum Destination {
    Export(Export),
    Meta(crate::destinations::meta::config::MetaConfig),
    Google(crate::destinations::google::config::GoogleConfig),
    TikTok(crate::destinations::tiktok::config::TikTokConfig),
    Snap(crate::destinations::snap::config::SnapConfig),
    Rest(crate::destinations::rest::config::RestConfig),
}

impl Destination {
    /// Whether the destination's `base_url` (a REST destination's `url` or `remove_url`) is
    /// `sandbox` (an in-process sandbox).
    pub fn wants_sandbox(&self) -> bool {
        match self {
            Destination::Meta(m) => m.base_url == "sandbox",
            Destination::Google(g) => g.base_url == "sandbox",
            Destination::TikTok(t) => t.base_url == "sandbox",
            Destination::Snap(s) => s.base_url == "sandbox",
            Destination::Rest(r) => {
                r.add.url == "sandbox" || r.remove.as_ref().is_some_and(|e| e.url == "sandbox")
            }
            Destination::Export(_) => false,
        }
    }

    /// Points a `sandbox` destination at a running sandbox (a REST destination at the route
    /// that records its requests, `/_sandbox/rest/{name}`).
    pub fn use_sandbox(&mut self, url: &str) {
        let (base_url, in_process) = match self {
            Destination::Meta(m) => (&mut m.base_url, &mut m.in_process_sandbox),
            Destination::Google(g) => (&mut g.base_url, &mut g.in_process_sandbox),
            Destination::TikTok(t) => (&mut t.base_url, &mut t.in_process_sandbox),
            Destination::Snap(s) => (&mut s.base_url, &mut s.in_process_sandbox),
            Destination::Rest(r) => {
                let recorder = format!("{url}/_sandbox/rest/{}", r.name);
                for e in std::iter::once(&mut r.add).chain(r.remove.as_mut()) {
                    if e.url == "sandbox" {
                        e.url = recorder.clone();
                    }
                }
                return;
            }
            Destination::Export(_) => return,
        };
        if base_url == "sandbox" {
            *base_url = url.to_string();
            *in_process = true;
        }
    }

    /// How the destination is synced (exports write the whole segment).
    pub fn sync_mode(&self) -> crate::state::SyncMode {
        match self {
            Destination::Export(_) => crate::state::SyncMode::Add,
            Destination::Meta(m) => m.sync,
            Destination::Google(g) => g.sync,
            Destination::TikTok(t) => t.sync,
            Destination::Snap(s) => s.sync,
            Destination::Rest(r) => r.sync,
        }
    }

    /// For platforms that match each identifier on its own (TikTok, Snap), where an identifier
    /// in the audience may stand for several members: the kinds they are sent.
    pub fn single_key_kinds(&self) -> Option<Vec<crate::destinations::ids::IdKind>> {
        match self {
            Destination::TikTok(t) => Some(vec![t.calculate_type.id_kind()]),
            Destination::Snap(_) => Some(crate::destinations::ids::IdKind::ALL.to_vec()),
            _ => None,
        }
    }

    /// Batch limits, to plan requests.
    pub fn batch_limits(&self) -> BatchLimits {
        match self {
            Destination::Export(e) => e.batch,
            Destination::Meta(m) => m.batch,
            Destination::Google(g) => g.batch,
            Destination::TikTok(t) => t.batch,
            Destination::Snap(s) => s.batch,
            Destination::Rest(r) => r.batch,
        }
    }

    /// Sets the batch limits (a resumed run cuts its batches as it began).
    pub fn set_batch_limits(&mut self, limits: BatchLimits) {
        match self {
            Destination::Export(e) => e.batch = limits,
            Destination::Meta(m) => m.batch = limits,
            Destination::Google(g) => g.batch = limits,
            Destination::TikTok(t) => t.batch = limits,
            Destination::Snap(s) => s.batch = limits,
            Destination::Rest(r) => r.batch = limits,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Destination::Export(e) => &e.name,
            Destination::Meta(m) => &m.name,
            Destination::Google(g) => &g.name,
            Destination::TikTok(t) => &t.name,
            Destination::Snap(s) => &s.name,
            Destination::Rest(r) => &r.name,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Export {
    pub name: String,
    /// A folder: files are written below it.
    pub url: Url,
    pub format: ExportFormat,
    pub layout: ExportLayout,
    pub batch: BatchLimits,
}

/// A parsed and checked job.
#[derive(Clone, Debug)]
pub struct Job {
    pub path: PathBuf,
    pub name: String,
    pub segment_path: PathBuf,
    pub profile: Profile,
    pub default_region: Option<Region>,
    pub vars: BTreeMap<String, toml::Value>,
    pub tables: Vec<Table>,
    pub identifiers: Vec<InputColumn>,
    pub consent: Vec<(ConsentRole, String)>,
    pub destinations: Vec<Destination>,
    /// The state store's URL.
    pub state: Url,
    /// After a successful run, the files of finished runs more than this many days before its
    /// run date are deleted, as `activator prune` does: what the current syncs refer to, the
    /// reports and unfinished dates stay. Default 7.
    pub state_keep_days: u32,
    /// Platform destinations in `add` mode are sent members as the segment is read, as exports
    /// are, instead of from the run's stored membership once it is read: uploading overlaps
    /// reading and hashing. What that gives up: a run killed while reading is not resumed batch
    /// by batch; its rerun sends the whole segment again (adding a member twice is harmless on
    /// every platform), and a run that fails while reading has added part of the segment.
    pub send_adds_while_reading: bool,
    pub guards: Guards,
    /// The `[aws]` section: how `activator stack` deploys the job (`run` ignores it).
    pub aws: crate::stack::settings::AwsSettings,
    /// The environment variables the file's `${VAR}`s read, with their values and every key
    /// that read each: a deployed job must be given the same (`activator stack`).
    pub variables: BTreeMap<String, (String, Vec<String>)>,
}

/// Days of old runs' files a job keeps when its file does not say.
pub const DEFAULT_STATE_KEEP_DAYS: u32 = 7;

/// The most days of old runs' files a job may keep: dates are reckoned with these, and a
/// century is more than any retention.
pub const MAX_KEEP_DAYS: u32 = 36_500;

impl Job {
    /// Reads, parses and checks a job file.
    pub fn load(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "cannot read job file {}: {e}; pass the path of a job file such as jobs/demo.toml",
                path.display()
            ))
        })?;
        Job::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses job text; `env` looks up variables (the process environment in `load`).
    pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Job> {
        let at = path.display().to_string();
        let file: JobFile =
            toml::from_str(text).map_err(|e| Error::config(format!("{at}: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let ctx = Resolver {
            at: &at,
            dir: &dir,
            env,
            used: Default::default(),
        };

        let name = match &file.name {
            Some(n) => ctx.interpolate(n, "name")?,
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "job".into()),
        };
        if !is_job_name(&name) {
            return Err(Error::config(format!(
                "{at}: name: a job's name names its folder in the state store and its export files, so it must be \
                 1 to 64 letters, digits, `_` or `-`, starting with a letter or digit{}; the file's name is used when \
                 `name` is not set",
                if file.name.is_some() {
                    ""
                } else {
                    " (set `name`, since the file's name is not one)"
                }
            )));
        }

        let segment_path = dir.join(ctx.interpolate(&file.segment, "segment")?);
        if !segment_path.is_file() {
            return Err(Error::config(format!(
                "{at}: segment: SQL file {} does not exist (paths are relative to the job file's folder)",
                segment_path.display()
            )));
        }

        let default_region = match &file.default_region {
            None => None,
            Some(r) => Some(Region::from_code(r).ok_or_else(|| {
                Error::config(format!(
                    "{at}: default_region: `{r}` is not an ISO 3166-1 alpha-2 code such as \"US\""
                ))
            })?),
        };

        let mut tables = vec![];
        for (i, t) in file.tables.iter().enumerate() {
            let key = format!("tables[{i}] ({})", t.name);
            if !is_identifier(&t.name) {
                return Err(Error::config(format!(
                    "{at}: {key}: name must be a SQL identifier (letters, digits, _)"
                )));
            }
            let url = ctx.location(&t.url, &format!("{key}.url"), true)?;
            if url.scheme() == "file" {
                let p = url.to_file_path().unwrap_or_default();
                if !p.exists() {
                    return Err(Error::config(format!(
                        "{at}: {key}.url: {} does not exist",
                        p.display()
                    )));
                }
            }
            tables.push(Table {
                name: t.name.clone(),
                url,
                format: t.format,
                partitions: t.partitions.clone(),
            });
        }
        if tables.is_empty() {
            return Err(Error::config(format!(
                "{at}: no tables: add a [[tables]] entry with a name and a url for each table the segment reads"
            )));
        }

        let mut identifiers = vec![];
        for (kind, spec) in &file.identifiers {
            let (column, hashed) = match spec {
                IdentifierFile::Column(c) => (c.clone(), false),
                IdentifierFile::Detailed(d) => (d.column.clone(), d.hashed),
            };
            // The country is read as the region of phones, states and zips even where a
            // profile does not send it.
            if file.profile.treatment(*kind).is_none() && *kind != Kind::Country {
                return Err(Error::config(format!(
                    "{at}: identifiers.{kind}: the {} profile does not use {kind}; it takes {}",
                    file.profile,
                    list(file.profile.kinds())
                )));
            }
            if hashed
                && (file.profile.treatment(*kind) != Some(crate::identity::Treatment::Hashed)
                    || *kind == Kind::DateOfBirth)
            {
                return Err(Error::config(format!(
                    "{at}: identifiers.{kind}: `hashed = true` is for kinds the {} profile hashes whole ({})",
                    file.profile,
                    list(
                        file.profile
                            .kinds()
                            .into_iter()
                            .filter(|k| *k != Kind::DateOfBirth
                                && file.profile.treatment(*k)
                                    == Some(crate::identity::Treatment::Hashed))
                    )
                )));
            }
            identifiers.push(InputColumn {
                kind: *kind,
                column,
                hashed,
            });
        }
        if !identifiers.iter().any(|i| i.kind.is_strong()) {
            return Err(Error::config(format!(
                "{at}: identifiers: map at least one of email, phone, mobile_ad_id, external_id to a column"
            )));
        }

        let consent = file.consent.iter().map(|(r, c)| (*r, c.clone())).collect();

        let mut destinations = vec![];
        for (i, d) in file.destinations.iter().enumerate() {
            match d {
                DestinationFile::Export(e) => {
                    let key = format!("destinations[{i}]");
                    let url = ctx.location(&e.url, &format!("{key}.url"), true)?;
                    let batch = BatchLimits {
                        max_rows: e.batch.max_rows.unwrap_or(1_000_000),
                        max_bytes: e.batch.max_bytes.unwrap_or(usize::MAX),
                    };
                    if batch.max_rows == 0 || batch.max_bytes == 0 {
                        return Err(Error::config(format!(
                            "{at}: {key}.batch: max_rows and max_bytes must be positive"
                        )));
                    }
                    destinations.push(Destination::Export(Export {
                        name: match &e.name {
                            Some(n) => ctx.interpolate(n, &format!("{key}.name"))?,
                            None => format!(
                                "export{}",
                                if i == 0 { String::new() } else { i.to_string() }
                            ),
                        },
                        url,
                        format: e.format,
                        layout: e.layout,
                        batch,
                    }));
                }
                DestinationFile::Meta(m) => {
                    let key = format!("destinations[{i}]");
                    if file.profile != Profile::Meta {
                        return Err(Error::config(format!(
                            "{at}: {key}: a meta destination needs `profile = \"meta\"` (the job uses {})",
                            file.profile
                        )));
                    }
                    destinations.push(Destination::Meta(m.resolve(&key, &ctx)?));
                }
                DestinationFile::Google(g) => {
                    let key = format!("destinations[{i}]");
                    if file.profile != Profile::Google {
                        return Err(Error::config(format!(
                            "{at}: {key}: a google destination needs `profile = \"google\"` (the job uses {})",
                            file.profile
                        )));
                    }
                    if let Some(i) = identifiers
                        .iter()
                        .find(|i| matches!(i.kind, Kind::MobileAdId | Kind::ExternalId))
                    {
                        return Err(Error::config(format!(
                            "{at}: {key}: the google destination uploads contact information (email, phone, name and address) to Customer Match lists; {} lists are not supported yet: remove identifiers.{}",
                            i.kind, i.kind
                        )));
                    }
                    destinations.push(Destination::Google(g.resolve(&key, &ctx)?));
                }
                DestinationFile::TikTok(t) => {
                    let key = format!("destinations[{i}]");
                    needs_meta_profile(file.profile, "tiktok", &at, &key)?;
                    let config = t.resolve(&key, &ctx)?;
                    let kind = config.calculate_type.id_kind().kind();
                    if !identifiers.iter().any(|i| i.kind == kind) {
                        return Err(Error::config(format!(
                            "{at}: {key}.calculate_type: {} files are written from identifiers.{kind}, which the job does not map; \
                             map it, or set calculate_type to the kind the job has (one kind per TikTok audience)",
                            config.calculate_type.api_name()
                        )));
                    }
                    destinations.push(Destination::TikTok(config));
                }
                DestinationFile::Snap(s) => {
                    let key = format!("destinations[{i}]");
                    needs_meta_profile(file.profile, "snap", &at, &key)?;
                    if !identifiers
                        .iter()
                        .any(|i| matches!(i.kind, Kind::Email | Kind::Phone | Kind::MobileAdId))
                    {
                        return Err(Error::config(format!(
                            "{at}: {key}: Snap customer lists take email, phone and mobile_ad_id; the job maps none of them"
                        )));
                    }
                    destinations.push(Destination::Snap(s.resolve(&key, &ctx)?));
                }
                DestinationFile::Rest(r) => {
                    let key = format!("destinations[{i}]");
                    let columns: Vec<String> = identifiers
                        .iter()
                        .flat_map(|i| crate::identity::output_fields(file.profile, i.kind))
                        .map(|f| f.name)
                        .chain(file.consent.values().cloned())
                        .collect();
                    destinations.push(Destination::Rest(r.resolve(&key, &ctx, &name, &columns)?));
                }
            }
        }
        if destinations.is_empty() {
            return Err(Error::config(format!(
                "{at}: no destinations: add a [[destinations]] entry (type = \"export\" with a url)"
            )));
        }

        let state = match &file.state {
            Some(s) => ctx.location(s, "state", true)?,
            None => {
                let cwd = std::env::current_dir().map_err(|e| Error::config(e.to_string()))?;
                let default = env("ACTIVATOR_STATE")
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| DEFAULT_STATE.to_string());
                resolve_location(&default, &cwd, true)
                    .map_err(|m| Error::config(format!("ACTIVATOR_STATE: {m}")))?
            }
        };
        let guards = Guards {
            allow_empty: file.guards.allow_empty.unwrap_or(false),
            max_removal_share: match file.guards.max_removal_share {
                None => 0.5,
                Some(s) if (0.0..=1.0).contains(&s) => s,
                Some(_) => {
                    return Err(Error::config(format!(
                        "{at}: guards.max_removal_share: a share between 0.0 and 1.0, e.g. 0.5 to stop a mirror run that would remove more than half of an audience"
                    )));
                }
            },
        };
        let mut names = std::collections::BTreeSet::new();
        for d in &destinations {
            if !is_identifier(d.name()) {
                return Err(Error::config(format!(
                    "{at}: destination `{}`: a name must be letters, digits and _ (it names the destination's state)",
                    d.name()
                )));
            }
            if !names.insert(d.name().to_string()) {
                return Err(Error::config(format!(
                    "{at}: two destinations are named `{}`: give each a distinct `name`",
                    d.name()
                )));
            }
        }

        let state_keep_days = file.state_keep_days.unwrap_or(DEFAULT_STATE_KEEP_DAYS);
        if state_keep_days > MAX_KEEP_DAYS {
            return Err(Error::config(format!(
                "{at}: state_keep_days: at most {MAX_KEEP_DAYS} (a century); the default is {DEFAULT_STATE_KEEP_DAYS}"
            )));
        }
        let aws = file.aws.resolve(&ctx, file.state.is_some())?;

        Ok(Job {
            variables: ctx.used.into_inner(),
            aws,
            state,
            state_keep_days,
            send_adds_while_reading: file.send_adds_while_reading.unwrap_or(false),
            guards,
            path: path.to_path_buf(),
            name,
            segment_path,
            profile: file.profile,
            default_region,
            vars: file.vars,
            tables,
            identifiers,
            consent,
            destinations,
        })
    }
}

/// TikTok and Snap match SHA-256 hex of e-mails trimmed and lowercased and of phones as digits
/// with the country code and no `+` (shared/spec/platforms.md §9): what the meta profile writes.
/// The google profile's gmail rule and `+`, or uid2's Base64, would give hashes that never match.
fn needs_meta_profile(profile: Profile, platform: &str, at: &str, key: &str) -> Result<()> {
    if profile == Profile::Meta {
        return Ok(());
    }
    Err(Error::config(format!(
        "{at}: {key}: a {platform} destination needs `profile = \"meta\"`: {platform} matches hashes of e-mails \
         trimmed and lowercased and of phones as digits with the country code and no `+`, as the meta profile \
         writes them; the job's {profile} profile would send hashes that never match"
    )))
}

fn list(kinds: impl IntoIterator<Item = Kind>) -> String {
    kinds
        .into_iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A job name: it becomes a path segment (`{state}/{job}/...`, `{job}-{date}.parquet`), so no
/// `/`, `..`, `%`, `#` or anything else a path or URL would read differently.
pub fn is_job_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// A name of letters, digits and `_`, not starting with a digit: a variable's, a column's.
pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Interpolates and resolves a job file's strings, naming the file and key in errors.
pub struct Resolver<'a> {
    pub at: &'a str,
    dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The variables read so far: name -> (value, the keys that read it).
    used: std::cell::RefCell<BTreeMap<String, (String, Vec<String>)>>,
}

impl Resolver<'_> {
    /// Replaces `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`.
    pub fn interpolate(&self, s: &str, key: &str) -> Result<String> {
        let recording = |name: &str| {
            let value = (self.env)(name).filter(|v| !v.is_empty());
            if let Some(v) = &value {
                self.used
                    .borrow_mut()
                    .entry(name.to_string())
                    .or_insert_with(|| (v.clone(), vec![]))
                    .1
                    .push(key.to_string());
            }
            value
        };
        interpolate(s, &recording).map_err(|m| Error::config(format!("{}: {key}: {m}", self.at)))
    }

    /// A URL (`s3://bucket/prefix`, `file:///abs`) or a path, relative to the job's folder.
    pub fn location(&self, s: &str, key: &str, folder: bool) -> Result<Url> {
        let s = self.interpolate(s, key)?;
        resolve_location(&s, self.dir, folder)
            .map_err(|m| Error::config(format!("{}: {key}: {m}", self.at)))
    }
}

/// Expands `${VAR}` and `${VAR:-default}` with `env`.
pub fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("`{s}` has a `${{` without its closing `}}`"))?;
            let expr = &tail[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            if !is_identifier(var) {
                return Err(format!("`${{{expr}}}` is not a variable name"));
            }
            match ((env)(var).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "uses ${{{var}}}, which is not set; set {var} in the environment or write ${{{var}:-default}}"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Turns a URL or a path into a URL; folders get a trailing `/`.
pub fn resolve_location(s: &str, dir: &Path, folder: bool) -> Result<Url, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("is empty; give an s3:// URL or a path".into());
    }
    let mut url = if s.contains("://") {
        let url = Url::parse(s).map_err(|e| format!("`{s}` is not a valid URL: {e}"))?;
        match url.scheme() {
            "s3" | "file" => {}
            other => {
                return Err(format!(
                    "scheme `{other}://` is not supported; use s3:// or file:// or a plain path"
                ));
            }
        }
        if url.scheme() == "s3" && url.host_str().unwrap_or("").is_empty() {
            return Err(format!("`{s}` names no bucket: write s3://BUCKET/prefix"));
        }
        url
    } else {
        let p = Path::new(s);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| e.to_string())?
                .join(dir)
                .join(p)
        };
        let abs = normalize_path(&abs);
        Url::from_file_path(&abs).map_err(|_| format!("`{s}` is not a usable path"))?
    };
    let looks_like_file = [".parquet", ".csv", ".json", ".ndjson"]
        .iter()
        .any(|e| url.path().ends_with(e));
    if folder && !looks_like_file && !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// Removes `.` and `..` components without touching the file system.
fn normalize_path(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "B1_DATA" => Some("/data/b1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolation() {
        assert_eq!(
            interpolate("${B1_DATA}/customers", &env).unwrap(),
            "/data/b1/customers"
        );
        assert_eq!(interpolate("${NOPE:-/tmp/x}", &env).unwrap(), "/tmp/x");
        assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(
            interpolate("cost $5 $${HOME}", &env).unwrap(),
            "cost $5 ${HOME}"
        );
        let err = interpolate("${NOPE}/x", &env).unwrap_err();
        assert!(err.contains("NOPE") && err.contains("not set"), "{err}");
        assert!(interpolate("${B1_DATA", &env).is_err());
    }

    #[test]
    fn job_names_are_single_path_segments() {
        for ok in ["demo", "bench_b1", "nightly-spenders", "7day"] {
            assert!(is_job_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../escaped",
            "a/b",
            "x%2F",
            "h#1",
            ".hidden",
            "-x",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!is_job_name(bad), "{bad}");
        }
    }

    #[test]
    fn numbers_out_of_range_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.sql"), "SELECT 1").unwrap();
        let job = |extra: &str| {
            format!(
                "segment = \"s.sql\"\nprofile = \"meta\"\n{extra}\n[[tables]]\nname = \"t\"\nurl = \"s3://b/t\"\n\
                 [identifiers]\nemail = \"e\"\n[[destinations]]\ntype = \"export\"\nurl = \"s3://b/out\"\n"
            )
        };
        let path = dir.path().join("j.toml");
        let parse = |text: &str| Job::parse(&path, text, &|_| None);
        assert!(parse(&job("state_keep_days = 36500")).is_ok());
        let err = parse(&job("state_keep_days = 4000000000")).unwrap_err();
        assert!(err.message.contains("state_keep_days"), "{err}");
        let err = parse(&job("name = \"../escaped\"")).unwrap_err();
        assert!(err.message.contains("name:"), "{err}");
    }

    #[test]
    fn locations() {
        let dir = Path::new("/repo/jobs");
        assert_eq!(
            resolve_location("../testdata/demo", dir, true)
                .unwrap()
                .as_str(),
            "file:///repo/testdata/demo/"
        );
        assert_eq!(
            resolve_location("s3://bucket/prefix", dir, true)
                .unwrap()
                .as_str(),
            "s3://bucket/prefix/"
        );
        assert!(resolve_location("s3:///prefix", dir, true).is_err());
        assert!(resolve_location("gs://b/p", dir, true).is_err());
    }
}
