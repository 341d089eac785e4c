//! Secrets by reference; job files never hold a secret's value.
//!
//! - `env:NAME` reads an environment variable;
//! - `aws-secretsmanager:SECRET_ID` reads a secret's string from AWS Secrets Manager, and
//!   `aws-secretsmanager:SECRET_ID#field` one field of a JSON secret. Credentials come from the
//!   standard AWS chain (environment, web identity, the AWS Batch container role) through
//!   object_store's provider; the request is signed with AWS's SigV4 signer (`aws-sigv4`) and
//!   sent through the shared retrying service (throttling retried). `AWS_ENDPOINT_URL` (or
//!   `AWS_ENDPOINT_URL_SECRETS_MANAGER`) points it at an emulator, over plain HTTP only with
//!   `AWS_ALLOW_HTTP=true`.
//!
//! Why not the whole AWS SDK (`aws-config`, `aws-sdk-secretsmanager`): one call does not need
//! it, and it would bring a second HTTP and TLS stack (hyper-rustls on aws-lc) beside reqwest's
//! and minutes of cold build; its signer is what matters, and that is used as is.
//!
//! Errors name the reference, never the value.

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

/// `GetSecretValue` through the shared retrying service: throttling (`ThrottlingException`,
/// HTTP 429) and server errors are retried with backoff, a refusal (not found, access denied) is
/// permanent. Requests are signed with AWS's own SigV4 signer (`aws-sigv4`), with credentials
/// from the standard chain, as object_store finds them for S3. Plain HTTP is taken only with
/// `AWS_ALLOW_HTTP=true` (an emulator), and then only to loopback.
async fn get_secret_value(secret_id: &str) -> Result<String> {
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into());
    let endpoint = std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|_| format!("https://secretsmanager.{region}.amazonaws.com"));
    let url = url::Url::parse(&endpoint)
        .map_err(|e| Error::config(format!("endpoint {endpoint}: {e}")))?;
    let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if url.scheme() != "https" && !allow_http {
        return Err(Error::config(format!(
            "endpoint {endpoint}: Secrets Manager is reached over HTTPS; plain HTTP (an emulator) needs AWS_ALLOW_HTTP=true"
        )));
    }
    let credential = aws_credential().await?;
    let body = serde_json::json!({ "SecretId": secret_id }).to_string();
    let service = crate::destinations::http::Service::new(
        "Secrets Manager",
        crate::destinations::http::RetryPolicy::default(),
        None,
    )?;
    let build = |client: &reqwest::Client| {
        let mut request = client
            .post(url.as_str())
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "secretsmanager.GetSecretValue")
            .body(body.clone());
        match sign(&credential, &region, url.as_str(), body.as_bytes()) {
            Ok(headers) => {
                for (name, value) in headers {
                    request = request.header(name, value);
                }
            }
            // Unsigned, it is refused with an answer that says so.
            Err(e) => tracing::warn!("cannot sign the Secrets Manager request: {e}"),
        }
        request
    };
    let answer: serde_json::Value = service
        .call("GetSecretValue", build, classify_secret_answer)
        .await?;
    answer["SecretString"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            Error::config("the secret has no SecretString (binary secrets are not supported)")
        })
}

/// What an answer of Secrets Manager means. Errors come as HTTP 400 with `__type`; throttling
/// among them is worth a retry. The answer's text beyond its error type is never shown: it is
/// the secret, or about it.
fn classify_secret_answer(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> crate::destinations::http::Verdict<serde_json::Value> {
    use crate::destinations::http::{Verdict, retry_after};
    let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if status.is_success() {
        return Verdict::Done(answer);
    }
    let kind = answer["__type"]
        .as_str()
        .unwrap_or("error")
        .rsplit('#')
        .next()
        .unwrap_or("error")
        .to_string();
    let why = format!("HTTP {}: {kind}", status.as_u16());
    let throttled = kind.contains("Throttling") || kind.contains("TooManyRequests");
    if throttled || status.as_u16() == 429 || status.is_server_error() {
        Verdict::Retry {
            after: retry_after(headers),
            why,
        }
    } else {
        Verdict::Fail(why)
    }
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

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) of a
/// `GetSecretValue` POST, from AWS's signer.
fn sign(
    credential: &Credential,
    region: &str,
    url: &str,
    body: &[u8],
) -> std::result::Result<Vec<(String, String)>, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = aws_credential_types::Credentials::new(
        &credential.key_id,
        &credential.secret_key,
        credential.token.clone(),
        None,
        "activator",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("secretsmanager")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signed_headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "secretsmanager.GetSecretValue"),
    ];
    let request = SignableRequest::new(
        "POST",
        url,
        signed_headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_retried_and_refusals_are_not() {
        use crate::destinations::http::Verdict;
        let h = reqwest::header::HeaderMap::new();
        let v = |status: u16, body: &str| {
            classify_secret_answer(
                reqwest::StatusCode::from_u16(status).unwrap(),
                &h,
                body.as_bytes(),
            )
        };
        assert!(matches!(
            v(
                400,
                r#"{"__type":"com.amazonaws.secretsmanager#ThrottlingException"}"#
            ),
            Verdict::Retry { .. }
        ));
        assert!(matches!(v(503, "{}"), Verdict::Retry { .. }));
        match v(
            400,
            r#"{"__type":"ResourceNotFoundException","Message":"s3cr3t"}"#,
        ) {
            Verdict::Fail(m) => assert!(
                m.contains("ResourceNotFoundException") && !m.contains("s3cr3t"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            v(200, r#"{"SecretString":"x"}"#),
            Verdict::Done(_)
        ));
    }

    #[test]
    fn requests_are_signed_with_sigv4() {
        let c = Credential {
            key_id: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            token: Some("session".into()),
        };
        let headers = sign(
            &c,
            "eu-west-1",
            "https://secretsmanager.eu-west-1.amazonaws.com/",
            b"{}",
        )
        .unwrap();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(
            auth.contains("/eu-west-1/secretsmanager/aws4_request"),
            "{auth}"
        );
        assert!(
            get("x-amz-date").is_some()
                && get("x-amz-security-token").as_deref() == Some("session")
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
