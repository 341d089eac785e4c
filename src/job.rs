//! Job files (`jobs/*.toml`): parsing and checks that name the file, the key and what is
//! expected; `${VAR}` interpolation is `resolve`'s.
//!
//! Parsing is strict (unknown keys and wrong types are errors with a line and column, courtesy
//! of the `toml` crate); strings are kept as written and interpolated afterwards, so an unset
//! variable is reported against the key that uses it. Relative paths are relative to the job
//! file's folder. Secrets never live here: destinations name them by reference.
//!
//! Each `[[destinations]]` table goes to the parser its `type` names in the destinations'
//! registry, which checks it against the job (profile, identifiers) and names the key
//! (`destinations[2]: unknown field ...`; toml gives no line for a table read apart).

use crate::destinations::Destination;
use crate::error::{Error, Result};
use crate::identity::{InputColumn, Kind, Profile, Region};
use crate::resolve::{Resolver, is_identifier, resolve_location};
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
    destinations: Vec<toml::Table>,
    /// Where sync state, checkpoints and run reports live (`s3://bucket/prefix` or a folder).
    state: Option<String>,
    /// Days of finished runs' files kept in the state store (see `Job::state_keep_days`).
    state_keep_days: Option<u32>,
    /// See `Job::send_adds_while_reading`.
    send_adds_while_reading: Option<bool>,
    /// `local` or `ballista://HOST:PORT` (see `Job::engine`).
    engine: Option<String>,
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

/// A table the segment reads.
#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub url: Url,
    pub format: TableFormat,
    pub partitions: Vec<String>,
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
    pub destinations: Vec<Box<dyn Destination>>,
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
    /// Where the segment's query runs: this process (`local`, the default) or a Ballista
    /// cluster; a run's `--engine` / `ACTIVATOR_ENGINE` overrides it.
    pub engine: crate::segment::Engine,
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
        let ctx = Resolver::new(&at, &dir, env);

        let name = job_name(&file, path, &ctx)?;

        let segment_path = dir.join(ctx.interpolate(&file.segment, "segment")?);
        if !segment_path.is_file() {
            return Err(Error::config(format!(
                "{at}: segment: SQL file {} does not exist (paths are relative to the job file's folder)",
                segment_path.display()
            )));
        }

        let default_region = default_region(file.default_region.as_deref(), &at)?;

        let tables = tables(&file.tables, &ctx)?;

        let identifiers = identifiers(&file.identifiers, file.profile, &at)?;

        let consent = file.consent.iter().map(|(r, c)| (*r, c.clone())).collect();

        let destinations = destinations(
            file.destinations,
            &crate::destinations::JobContext {
                key: String::new(),
                index: 0,
                resolver: &ctx,
                job: &name,
                profile: file.profile,
                identifiers: &identifiers,
                consent_columns: file.consent.values().cloned().collect(),
            },
        )?;

        let state = state_location(file.state.as_deref(), &ctx, env)?;
        let guards = guards(&file.guards, &at)?;

        let state_keep_days = file.state_keep_days.unwrap_or(DEFAULT_STATE_KEEP_DAYS);
        if state_keep_days > MAX_KEEP_DAYS {
            return Err(Error::config(format!(
                "{at}: state_keep_days: at most {MAX_KEEP_DAYS} (a century); the default is {DEFAULT_STATE_KEEP_DAYS}"
            )));
        }
        let engine = engine(file.engine.as_deref(), &ctx)?;
        // A cluster job deploys as a multi-node job on EC2: its `[aws]` section says so.
        let cluster = matches!(engine, crate::segment::Engine::Cluster { .. });
        let aws = file.aws.resolve(&ctx, file.state.is_some(), cluster)?;

        Ok(Job {
            variables: ctx.into_variables(),
            aws,
            state,
            state_keep_days,
            send_adds_while_reading: file.send_adds_while_reading.unwrap_or(false),
            engine,
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

/// The job's name: `name`, else the file's name. It names the job's folder in the state store
/// and its export files, so it must be a plain name.
fn job_name(file: &JobFile, path: &Path, ctx: &Resolver) -> Result<String> {
    let name = match &file.name {
        Some(n) => ctx.interpolate(n, "name")?,
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into()),
    };
    if !is_job_name(&name) {
        return Err(Error::config(format!(
            "{}: name: a job's name names its folder in the state store and its export files, so it must be \
             1 to 64 letters, digits, `_` or `-`, starting with a letter or digit{}; the file's name is used when \
             `name` is not set",
            ctx.at,
            if file.name.is_some() {
                ""
            } else {
                " (set `name`, since the file's name is not one)"
            }
        )));
    }
    Ok(name)
}

/// `default_region`, checked: an ISO 3166-1 alpha-2 code.
fn default_region(code: Option<&str>, at: &str) -> Result<Option<Region>> {
    let Some(r) = code else { return Ok(None) };
    let region = Region::from_code(r).ok_or_else(|| {
        Error::config(format!(
            "{at}: default_region: `{r}` is not an ISO 3166-1 alpha-2 code such as \"US\""
        ))
    })?;
    Ok(Some(region))
}

/// Where the job's sync state lives: `state`, else `ACTIVATOR_STATE`, else `DEFAULT_STATE`
/// (the last two relative to the working folder).
fn state_location(
    state: Option<&str>,
    ctx: &Resolver,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Url> {
    if let Some(s) = state {
        return ctx.location(s, "state", true);
    }
    let cwd = std::env::current_dir().map_err(|e| Error::config(e.to_string()))?;
    let default = env("ACTIVATOR_STATE")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_STATE.to_string());
    resolve_location(&default, &cwd, true)
        .map_err(|m| Error::config(format!("ACTIVATOR_STATE: {m}")))
}

/// Where the segment's query runs: `engine`, else on this machine.
fn engine(engine: Option<&str>, ctx: &Resolver) -> Result<crate::segment::Engine> {
    let Some(e) = engine else {
        return Ok(crate::segment::Engine::Local);
    };
    crate::segment::Engine::parse(&ctx.interpolate(e, "engine")?)
        .map_err(|m| Error::config(format!("{}: engine: {m}", ctx.at)))
}

/// The tables the segment reads, with their URLs resolved and local paths checked.
fn tables(files: &[TableFile], ctx: &Resolver) -> Result<Vec<Table>> {
    let at = ctx.at;
    let mut tables = vec![];
    for (i, t) in files.iter().enumerate() {
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
    Ok(tables)
}

/// The identifier columns, checked against what the profile takes.
fn identifiers(
    files: &BTreeMap<Kind, IdentifierFile>,
    profile: Profile,
    at: &str,
) -> Result<Vec<InputColumn>> {
    let mut identifiers = vec![];
    for (kind, spec) in files {
        let (column, hashed) = match spec {
            IdentifierFile::Column(c) => (c.clone(), false),
            IdentifierFile::Detailed(d) => (d.column.clone(), d.hashed),
        };
        // The country is read as the region of phones, states and zips even where a
        // profile does not send it.
        if profile.treatment(*kind).is_none() && *kind != Kind::Country {
            return Err(Error::config(format!(
                "{at}: identifiers.{kind}: the {} profile does not use {kind}; it takes {}",
                profile,
                list(profile.kinds())
            )));
        }
        if hashed
            && (profile.treatment(*kind) != Some(crate::identity::Treatment::Hashed)
                || *kind == Kind::DateOfBirth)
        {
            return Err(Error::config(format!(
                "{at}: identifiers.{kind}: `hashed = true` is for kinds the {} profile hashes whole ({})",
                profile,
                list(
                    profile
                        .kinds()
                        .into_iter()
                        .filter(|k| *k != Kind::DateOfBirth
                            && profile.treatment(*k) == Some(crate::identity::Treatment::Hashed))
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
    Ok(identifiers)
}

/// The destinations, each checked by the parser its `type` names; names distinct and usable as
/// state folders. `job` is the context every destination shares (its key and index are set
/// per destination).
fn destinations(
    tables: Vec<toml::Table>,
    job: &crate::destinations::JobContext,
) -> Result<Vec<Box<dyn Destination>>> {
    let at = job.resolver.at;
    let mut destinations = vec![];
    for (index, table) in tables.into_iter().enumerate() {
        let ctx = crate::destinations::JobContext {
            key: format!("destinations[{index}]"),
            index,
            consent_columns: job.consent_columns.clone(),
            ..*job
        };
        destinations.push(crate::destinations::parse(table, &ctx)?);
    }
    if destinations.is_empty() {
        return Err(Error::config(format!(
            "{at}: no destinations: add a [[destinations]] entry (type = \"export\" with a url)"
        )));
    }
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
    one_export_a_folder(&destinations, at)?;
    Ok(destinations)
}

/// An export's files are named by the job and the date alone: `{stem}.{ext}` for `per_run`, a
/// folder `{stem}/` for `per_batch`, whose rerun first removes what it held. Two exports to one
/// folder would overwrite or remove each other's files, and both report success, unless both
/// write one file a run in formats of their own (Parquet and CSV side by side).
fn one_export_a_folder(destinations: &[Box<dyn Destination>], at: &str) -> Result<()> {
    let mut folders: std::collections::BTreeMap<String, (&str, bool, &str)> = Default::default();
    for d in destinations {
        for target in d.targets() {
            let crate::destinations::Target::Files {
                url,
                per_batch,
                extension,
                ..
            } = target
            else {
                continue;
            };
            let folder = url.as_str().trim_end_matches('/').to_string();
            if let Some((other, other_per_batch, other_extension)) =
                folders.insert(folder, (d.name(), per_batch, extension))
                && (per_batch || other_per_batch || extension == other_extension)
            {
                return Err(Error::config(format!(
                    "{at}: destinations `{other}` and `{}` export to the same folder {url}: \
                     their files would overwrite each other; give each its own `url`",
                    d.name()
                )));
            }
        }
    }
    Ok(())
}

fn guards(file: &GuardsFile, at: &str) -> Result<Guards> {
    Ok(Guards {
        allow_empty: file.allow_empty.unwrap_or(false),
        max_removal_share: match file.max_removal_share {
            None => 0.5,
            Some(s) if (0.0..=1.0).contains(&s) => s,
            Some(_) => {
                return Err(Error::config(format!(
                    "{at}: guards.max_removal_share: a share between 0.0 and 1.0, e.g. 0.5 to stop a mirror run that would remove more than half of an audience"
                )));
            }
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A job file with one destination table, given as TOML lines.
    fn with_destination(destination: &str) -> String {
        format!(
            "segment = \"s.sql\"\nprofile = \"meta\"\n[[tables]]\nname = \"t\"\nurl = \"s3://b/t\"\n\
             [identifiers]\nemail = \"e\"\n[[destinations]]\n{destination}\n"
        )
    }

    #[test]
    fn destinations_are_found_by_type_and_their_tables_checked_by_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.sql"), "SELECT 1").unwrap();
        let path = dir.path().join("j.toml");
        let parse = |d: &str| Job::parse(&path, &with_destination(d), &|_| None);
        let err = parse("type = \"myspace\"").unwrap_err().message;
        assert!(
            err.contains("destinations[0].type: `myspace` is not a destination")
                && err.contains("export, meta, google, tiktok, snap, rest"),
            "{err}"
        );
        let err = parse("url = \"s3://b/out\"").unwrap_err().message;
        assert!(err.contains("destinations[0]: give its `type`"), "{err}");
        let err = parse("type = \"export\"\nurl = \"s3://b/out\"\ncolour = 1")
            .unwrap_err()
            .message;
        assert!(
            err.contains("destinations[0]: unknown field `colour`"),
            "{err}"
        );
        let err = parse(
            "type = \"google\"\ncustomer_id = \"1\"\nuser_list = \"l\"\naccess_token = \"env:T\"",
        )
        .unwrap_err()
        .message;
        assert!(err.contains("needs `profile = \"google\"`"), "{err}");
    }

    #[test]
    fn two_exports_may_not_share_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.sql"), "SELECT 1").unwrap();
        let path = dir.path().join("j.toml");
        // Exports `daily` (with the settings `daily`) to `a` and `copy` (CSV) to `b`.
        let exports = |daily: &str, a: &str, b: &str| {
            let text = with_destination(&format!(
                "type = \"export\"\nname = \"daily\"\nurl = \"{a}\"\n{daily}\n\
                 [[destinations]]\ntype = \"export\"\nname = \"copy\"\nurl = \"{b}\"\nformat = \"csv\""
            ));
            Job::parse(&path, &text, &|_| None)
        };
        let two = |a: &str, b: &str| exports("", a, b);
        // Same format, one file a run each: the same file.
        let same = |a: &str, b: &str| exports("format = \"csv\"", a, b);
        let err = same("s3://b/out", "s3://b/out/").unwrap_err();
        assert_eq!(err.class, crate::ErrorClass::Config);
        assert!(
            err.message
                .contains("destinations `daily` and `copy` export to the same folder s3://b/out"),
            "{}",
            err.message
        );
        assert!(same("s3://b/out", "s3://b/out-csv").is_ok());
        // Parquet and CSV side by side, one file a run each: no clash.
        assert!(two("s3://b/out", "s3://b/out/").is_ok());
        // A folder a run beside one file: the rerun's removal of the folder is not the file's,
        // but the layouts are kept apart all the same.
        let batched = exports("layout = \"per_batch\"", "s3://b/out", "s3://b/out");
        assert!(batched.is_err());
    }

    #[test]
    fn every_string_of_a_destination_reads_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.sql"), "SELECT 1").unwrap();
        let path = dir.path().join("j.toml");
        let env = |name: &str| match name {
            "MODE" => Some("mirror".to_string()),
            "WHO" => Some("nightly".to_string()),
            "VERSION" => Some("v1.4".to_string()),
            _ => None,
        };
        for destination in [
            "type = \"tiktok\"\nadvertiser_id = \"1\"\naudience = \"a\"\naccess_token = \"env:T\"\napi_version = \"${VERSION}\"",
            "type = \"snap\"\nad_account_id = \"a-1\"\naudience = \"a\"\naccess_token = \"env:T\"",
            "type = \"rest\"\nurl = \"https://example.com/add\"\nremove_method = \"DELETE\"",
            "type = \"meta\"\nad_account_id = \"1\"\naudience = \"a\"\naccess_token = \"env:T\"\napi_version = \"${VERSION}\"",
        ] {
            let text = with_destination(&format!(
                "{destination}\nname = \"${{WHO}}\"\nsync = \"${{MODE}}\""
            ));
            let job = Job::parse(&path, &text, &env).unwrap();
            let d = &job.destinations[0];
            assert_eq!(d.name(), "nightly", "{destination}");
            assert_eq!(
                d.sync_mode(),
                crate::destinations::SyncMode::Mirror,
                "{destination}"
            );
            let readers = &job.variables["MODE"].1;
            assert_eq!(readers, &["destinations[0].sync"], "{destination}");
            if destination.contains("api_version") {
                assert_eq!(job.variables["VERSION"].1, ["destinations[0].api_version"]);
            }
        }
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
}
