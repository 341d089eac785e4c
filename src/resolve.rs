//! A job file's strings, resolved: `${VAR}` and `${VAR:-default}` interpolation, locations
//! (an `s3://` URL or a path relative to the job file's folder), and the names a job may give.
//! Job files, destinations' settings and the `[aws]` section all resolve through a `Resolver`,
//! which names the file and the key in every error and records which variables each key read
//! (a deployed job must be given the same).

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use url::Url;

/// A name of letters, digits and `_`, not starting with a digit: a variable's, a column's.
pub fn is_identifier(s: &str) -> bool {
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
    used: std::cell::RefCell<Variables>,
}

/// The variables a job file read: name -> (value, every key that read it).
pub type Variables = BTreeMap<String, (String, Vec<String>)>;

impl<'a> Resolver<'a> {
    /// Resolves the strings of the file `at`, whose paths are relative to `dir`, reading
    /// variables with `env`.
    pub fn new(
        at: &'a str,
        dir: &'a Path,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Resolver<'a> {
        Resolver {
            at,
            dir,
            env,
            used: Default::default(),
        }
    }

    /// The variables read, and the keys that read each.
    pub fn into_variables(self) -> Variables {
        self.used.into_inner()
    }

    /// Replaces `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`.
    pub fn interpolate(&self, s: &str, key: &str) -> Result<String> {
        self.expand(s, key, false)
    }

    /// As `interpolate`; in a location (`in_location`), a variable after the start may not
    /// lead out of the folder written before it: `s3://b/exports/${SEGMENT}/` with SEGMENT
    /// `../finance` would be `s3://b/finance/` once the URL is parsed. (A variable the location
    /// begins with is its base, and may be any path.)
    fn expand(&self, s: &str, key: &str, in_location: bool) -> Result<String> {
        let base = std::cell::Cell::new(in_location && s.trim_start().starts_with("${"));
        let leading_out = std::cell::RefCell::new(None);
        let recording = |name: &str| {
            let value = (self.env)(name).filter(|v| !v.is_empty());
            if in_location && !base.replace(false) && value.as_deref().is_some_and(leads_out) {
                leading_out.borrow_mut().get_or_insert(name.to_string());
            }
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
        let expanded = interpolate(s, &recording)
            .map_err(|m| Error::config(format!("{}: {key}: {m}", self.at)))?;
        match leading_out.into_inner() {
            Some(name) => Err(Error::config(format!(
                "{}: {key}: ${{{name}}} holds `..` or an encoded `.`, `/` or `\\`, which would lead \
                 out of the folder written before it; give it a plain name",
                self.at
            ))),
            None => Ok(expanded),
        }
    }

    /// A URL (`s3://bucket/prefix`, `file:///abs`) or a path, relative to the job's folder.
    pub fn location(&self, s: &str, key: &str, folder: bool) -> Result<Url> {
        let expanded = self.expand(s, key, true)?;
        let url = resolve_location(&expanded, self.dir, folder)
            .map_err(|m| Error::config(format!("{}: {key}: {m}", self.at)))?;
        // Values harmless one by one may step out together (`${A}${B}` with `.` and `.`): the
        // location must still begin with what is written before its later variables.
        if let Some(fixed) = fixed_part(s) {
            // Read again, not recorded again: `expand` above recorded what it read.
            let fixed = interpolate(fixed, self.env).unwrap_or_default();
            if let Ok(fixed) = resolve_location(&fixed, self.dir, false)
                && !url.as_str().starts_with(fixed.as_str())
            {
                return Err(Error::config(format!(
                    "{}: {key}: its variables lead from {fixed} to {url}, out of the folder \
                     written before them; give them plain names",
                    self.at
                )));
            }
        }
        Ok(url)
    }
}

/// The part of a location before its first variable after the start (a variable it begins
/// with is its base), if it has one.
fn fixed_part(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let from = match s.strip_prefix("${") {
        Some(rest) => s.len() - rest.len() + rest.find('}')? + 1,
        None => 0,
    };
    let mut at = from;
    while let Some(i) = s[at..].find("${") {
        let i = at + i;
        if i == 0 || s.as_bytes()[i - 1] != b'$' {
            return Some(&s[..i]);
        }
        at = i + 2;
    }
    None
}

/// Whether a value put into a location could step out of the folder around it: a `..` step,
/// or a `.`, `/` or `\` percent-encoded (URL parsers decode and resolve them).
fn leads_out(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e))
        || lower.split(['/', '\\']).any(|step| step == "..")
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

    #[test]
    fn a_variable_may_not_lead_a_location_out_of_the_folder_written_before_it() {
        let env = |name: &str| match name {
            "UP" => Some("../finance".to_string()),
            "DOTS" => Some("%2E%2e".to_string()),
            "SLASH" => Some("a%2fb".to_string()),
            "PLAIN" => Some("spenders".to_string()),
            "DATA" => Some("../data".to_string()),
            "DOT" => Some(".".to_string()),
            "BUCKET" => Some("b".to_string()),
            _ => None,
        };
        let resolver = Resolver::new("jobs/j.toml", Path::new("/repo/jobs"), &env);
        let at = |s: &str| resolver.location(s, "destinations[0].url", true);
        for var in ["UP", "DOTS", "SLASH"] {
            let err = at(&format!("s3://b/exports/${{{var}}}/")).unwrap_err();
            assert_eq!(err.class, crate::ErrorClass::Config);
            assert!(
                err.message.starts_with(&format!(
                    "jobs/j.toml: destinations[0].url: ${{{var}}} holds `..`"
                )),
                "{}",
                err.message
            );
        }
        let url = at("s3://b/exports/${PLAIN}/").unwrap();
        assert_eq!(url.as_str(), "s3://b/exports/spenders/");
        // A location that begins with a variable takes it as its base, relative or not; the job
        // file's own text may step up too.
        let url = at("${DATA}/customers").unwrap();
        assert_eq!(url.as_str(), "file:///repo/data/customers/");
        let url = at("${NONE:-../testdata}/${PLAIN}").unwrap();
        assert_eq!(url.as_str(), "file:///repo/testdata/spenders/");
        assert!(at("${PLAIN}/${UP}").is_err());
        // Harmless one by one, out together.
        let err = at("s3://b/exports/${DOT}${DOT}/finance").unwrap_err();
        assert!(err.message.contains("out of the folder"), "{}", err.message);
        assert_eq!(
            at("s3://${BUCKET}/exports/${PLAIN}").unwrap().as_str(),
            "s3://b/exports/spenders/"
        );
        assert_eq!(
            at("s3://b/exp$${X}-${PLAIN}").unwrap().as_str(),
            "s3://b/exp$%7BX%7D-spenders/"
        );
        // Other strings are not locations: any value goes.
        assert_eq!(
            resolver.interpolate("${UP}", "audience").unwrap(),
            "../finance"
        );
    }
}
