//! Object stores for URLs: `s3://bucket/...` and `file:///...`, one trait for both.
//!
//! S3 takes the standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP` for S3-compatible servers, web identity and container credentials on AWS
//! Batch). Retries are bounded so an unreachable endpoint fails in seconds, not minutes.

use crate::error::{Error, Result};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The store for `url` and the object path within it.
pub fn store_for(url: &Url) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|_| Error::config(format!("{url} is not a local path")))?;
            let store = LocalFileSystem::new();
            let location = StorePath::from_absolute_path(&path)
                .map_err(|e| Error::config(format!("{url}: {e}")))?;
            Ok((Arc::new(store), location))
        }
        "s3" => {
            let bucket = url.host_str().unwrap_or_default();
            let store = s3_store(bucket)?;
            let location = StorePath::from_url_path(url.path())
                .map_err(|e| Error::config(format!("{url}: {e}")))?;
            Ok((store, location))
        }
        other => Err(Error::config(format!(
            "{url}: scheme {other}:// is not supported; use s3:// or a path"
        ))),
    }
}

/// The path on this machine's filesystem of `location` in the store of `url`, for a local
/// (`file://`) URL.
pub fn local_path(url: &Url, location: &StorePath) -> Option<std::path::PathBuf> {
    (url.scheme() == "file")
        .then(|| LocalFileSystem::new().path_to_filesystem(location).ok())
        .flatten()
}

/// An S3 store for one bucket, from the environment.
pub fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: env_number("ACTIVATOR_S3_MAX_RETRIES", 4),
        retry_timeout: Duration::from_secs(env_number("ACTIVATOR_S3_RETRY_TIMEOUT_SECS", 30) as u64),
    };
    // `from_env` does not read AWS_ALLOW_HTTP; S3-compatible servers on loopback need it.
    let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
        .with_allow_http(allow_http);
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .with_client_options(options)
        .build()
        .map_err(|e| {
            Error::config(format!(
                "s3://{bucket}: cannot set up S3 access: {e}; check AWS_REGION, AWS_ENDPOINT_URL and the credentials in the environment"
            ))
        })?;
    Ok(Arc::new(store))
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The URL DataFusion registers a store under: `s3://bucket` or `file://`.
pub fn store_root(url: &Url) -> Url {
    let mut root = url.clone();
    root.set_path("");
    root.set_query(None);
    root.set_fragment(None);
    root
}
