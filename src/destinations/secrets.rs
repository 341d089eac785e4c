//! Secrets by reference; job files never hold a secret's value.
//!
//! - `env:NAME` reads an environment variable;
//! - `aws-secretsmanager:SECRET_ID` reads a secret's string from AWS Secrets Manager, and
//!   `aws-secretsmanager:SECRET_ID#field` one field of a JSON secret. Credentials come from the
//!   standard AWS chain (environment, web identity, the AWS Batch container role) through
//!   object_store's provider; the request is signed here with SigV4. `AWS_ENDPOINT_URL` (or
//!   `AWS_ENDPOINT_URL_SECRETS_MANAGER`) points it at an emulator.
//!
//! Errors name the reference, never the value.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

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
        Some(("aws-secretsmanager", id)) if !id.is_empty() && !id.starts_with('#') => Ok(()),
        _ => Err(
            "not a secret reference (its text is not shown): write env:NAME or aws-secretsmanager:SECRET_ID[#field]; the secret itself never goes in a job file"
                .to_string(),
        ),
    }
}

/// A platform token: the reference resolved, or, for an in-process sandbox (which takes any
/// token) whose reference is not set, a placeholder, so the demo runs without an account.
pub async fn platform_token(
    reference: &str,
    key: &str,
    in_process_sandbox: bool,
) -> Result<Secret> {
    match resolve(reference, key).await {
        Err(_) if in_process_sandbox => Ok(Secret::new("sandbox-token")),
        other => other,
    }
}

/// Resolves a reference to its value; `key` names where it was used, for errors.
pub async fn resolve(reference: &str, key: &str) -> Result<Secret> {
    check_reference(reference).map_err(|m| Error::config(format!("{key}: {m}")))?;
    match reference.split_once(':').expect("checked") {
        ("env", name) => match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Secret(v)),
            _ => Err(Error::config(format!(
                "{key}: the environment variable {name} is not set; set it to the secret"
            ))),
        },
        (_, id) => {
            let (secret_id, field) = match id.split_once('#') {
                Some((s, f)) => (s, Some(f)),
                None => (id, None),
            };
            let text = get_secret_value(secret_id)
                .await
                .map_err(|e| e.context(format!("{key}: Secrets Manager secret {secret_id}")))?;
            match field {
                None => Ok(Secret(text)),
                Some(f) => {
                    let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                        Error::config(format!(
                            "{key}: secret {secret_id} is not JSON, so it has no field {f}"
                        ))
                    })?;
                    json[f]
                        .as_str()
                        .map(|v| Secret(v.to_string()))
                        .ok_or_else(|| {
                            Error::config(format!(
                                "{key}: secret {secret_id} has no string field {f}"
                            ))
                        })
                }
            }
        }
    }
}

async fn get_secret_value(secret_id: &str) -> Result<String> {
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into());
    let endpoint = std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|_| format!("https://secretsmanager.{region}.amazonaws.com"));
    let url = url::Url::parse(&endpoint)
        .map_err(|e| Error::config(format!("endpoint {endpoint}: {e}")))?;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let credential = aws_credential().await?;
    let body = serde_json::json!({ "SecretId": secret_id }).to_string();
    let now = chrono::Utc::now();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let mut headers = vec![
        ("content-type", "application/x-amz-json-1.1".to_string()),
        ("host", host),
        ("x-amz-date", amz_date.clone()),
        ("x-amz-target", "secretsmanager.GetSecretValue".to_string()),
    ];
    if let Some(token) = &credential.token {
        headers.push(("x-amz-security-token", token.clone()));
    }
    let path = if url.path().is_empty() {
        "/"
    } else {
        url.path()
    };
    let authorization = sigv4(
        &credential,
        &region,
        "secretsmanager",
        path,
        &headers,
        &body,
        &now,
    );
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Error::internal(e.to_string()))?;
    let mut request = client.post(url.as_str()).body(body);
    for (k, v) in &headers {
        if *k != "host" {
            request = request.header(*k, v);
        }
    }
    let response = request
        .header("authorization", authorization)
        .send()
        .await
        .map_err(|e| Error::transient(format!("cannot reach {endpoint}: {e}")))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        let kind = answer["__type"].as_str().unwrap_or("error");
        let e = format!("HTTP {}: {kind}", status.as_u16());
        return Err(if status.is_server_error() {
            Error::transient(e)
        } else {
            Error::config(e)
        });
    }
    answer["SecretString"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            Error::config("the secret has no SecretString (binary secrets are not supported)")
        })
}

struct Credential {
    key_id: String,
    secret_key: String,
    token: Option<String>,
}

/// Credentials from the standard chain, as object_store finds them for S3.
async fn aws_credential() -> Result<Credential> {
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name("credentials-only")
        .build()
        .map_err(|e| Error::config(format!("AWS credentials: {e}")))?;
    let c = s3
        .credentials()
        .get_credential()
        .await
        .map_err(|e| Error::config(format!("AWS credentials: {e}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or run with a role")))?;
    Ok(Credential {
        key_id: c.key_id.clone(),
        secret_key: c.secret_key.clone(),
        token: c.token.clone(),
    })
}

fn hex_sha256(data: &[u8]) -> String {
    let mut out = [0u8; 64];
    let _ = faster_hex::hex_encode(&Sha256::digest(data), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `Authorization` header of an AWS Signature Version 4 POST to `path`.
fn sigv4(
    credential: &Credential,
    region: &str,
    service: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
    now: &chrono::DateTime<chrono::Utc>,
) -> String {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = now.format("%Y%m%d").to_string();
    let mut sorted: Vec<_> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    sorted.sort();
    let canonical_headers: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = sorted
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "POST\n{path}\n\n{canonical_headers}\n{signed_headers}\n{}",
        hex_sha256(body.as_bytes())
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    );
    let k_date = hmac(
        format!("AWS4{}", credential.secret_key).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let mut signature = [0u8; 64];
    let _ = faster_hex::hex_encode(&hmac(&k_signing, to_sign.as_bytes()), &mut signature);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={}",
        credential.key_id,
        String::from_utf8_lossy(&signature)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mut out = [0u8; 64];
        let _ = faster_hex::hex_encode(&hmac(b"Jefe", b"what do ya want for nothing?"), &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn references() {
        assert!(check_reference("env:META_TOKEN").is_ok());
        assert!(check_reference("aws-secretsmanager:prod/meta#token").is_ok());
        let err = check_reference("EAAB1234567890abcdef").unwrap_err();
        assert!(
            !err.contains("EAAB1234567890abcdef"),
            "the value leaked into the error"
        );
    }
}
