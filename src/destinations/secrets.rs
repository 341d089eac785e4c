//! Secrets by reference: `env:NAME` reads an environment variable; job files never hold a
//! secret's value. Errors name the reference, never the value.

use crate::error::{Error, Result};

/// A resolved secret; its `Debug` does not show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(value: &str) -> Secret {
        Secret(value.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Checks a reference's form without resolving it (job loading).
pub fn check_reference(reference: &str) -> std::result::Result<(), String> {
    match reference.split_once(':') {
        Some(("env", name)) if !name.is_empty() => Ok(()),
        _ => Err(format!(
            "`{}` is not a secret reference: write env:NAME (the secret's value never goes in a job file)",
            if reference.len() > 12 {
                "<hidden>"
            } else {
                reference
            }
        )),
    }
}

/// Resolves a reference to its value.
pub async fn resolve(reference: &str, key: &str) -> Result<Secret> {
    check_reference(reference).map_err(|m| Error::config(format!("{key}: {m}")))?;
    let (_, name) = reference.split_once(':').expect("checked");
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(Secret(v)),
        _ => Err(Error::config(format!(
            "{key}: the environment variable {name} is not set; set it to the token"
        ))),
    }
}
