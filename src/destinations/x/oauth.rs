//! OAuth 1.0a request signing (RFC 5849 §3.4, HMAC-SHA1), which X's Ads API requires of every
//! call ("All rate limiting in the Ads API utilizes OAuth 1.0A"; there is no bearer token).
//!
//! What is signed: the method, the base URI (scheme and host in lower case, the port only when it
//! is not the scheme's default, the path) and the parameters, the `oauth_*` ones and the query's,
//! each percent-encoded (RFC 5849 §3.6: all but `A-Z a-z 0-9 - . _ ~`) and sorted. A JSON body
//! is not: RFC 5849 signs only form-encoded bodies, and X says the same of its JSON ones. The key
//! is the consumer secret and the token secret, each encoded, joined by `&`.
//!
//! A request is signed when it is built, so each try of a retried request carries a nonce and a
//! timestamp of its own: X takes a nonce once ("to determine whether a request has been submitted
//! multiple times"), and a retry signed with the first try's would be refused. Nonces are 16
//! bytes of the system's secure random source in hex.
//!
//! The sandbox verifies signatures with the same functions; that its verification agrees with
//! X's own signer (`requests-oauthlib`, under the official `twitter-ads` SDK) is what
//! tests/official/x_client.py proves, and the unit tests below check the algorithm against the
//! worked example of X's documentation ("Creating a signature").

use crate::destinations::secrets::Secret;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::time::{SystemTime, UNIX_EPOCH};

/// The only signature method X takes.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
pub const VERSION: &str = "1.0";

/// An X app's credentials acting for a user; `Debug` shows none of them.
#[derive(Clone)]
pub struct Credentials {
    /// The app's API key (`oauth_consumer_key`).
    pub consumer_key: Secret,
    pub consumer_secret: Secret,
    /// The user's access token (`oauth_token`).
    pub access_token: Secret,
    pub access_token_secret: Secret,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(***)")
    }
}

impl Credentials {
    /// Credentials from their values (the sandbox's documented ones, or a test's).
    pub fn new(
        consumer_key: &str,
        consumer_secret: &str,
        access_token: &str,
        access_token_secret: &str,
    ) -> Credentials {
        Credentials {
            consumer_key: Secret::new(consumer_key),
            consumer_secret: Secret::new(consumer_secret),
            access_token: Secret::new(access_token),
            access_token_secret: Secret::new(access_token_secret),
        }
    }

    /// `text` with any of the four values in it replaced: a platform message that echoes a
    /// credential must not carry it into the logs.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in [
            &self.consumer_key,
            &self.consumer_secret,
            &self.access_token,
            &self.access_token_secret,
        ] {
            let value = secret.expose();
            if !value.is_empty() && out.contains(value) {
                out = out.replace(value, "(credential, not shown)");
            }
        }
        out
    }
}

/// Signs requests with one set of credentials.
pub struct Signer {
    consumer_key: Secret,
    access_token: Secret,
    key: hmac::Key,
    random: SystemRandom,
}

impl Signer {
    pub fn new(credentials: &Credentials) -> Signer {
        Signer {
            consumer_key: credentials.consumer_key.clone(),
            access_token: credentials.access_token.clone(),
            key: signing_key(
                credentials.consumer_secret.expose(),
                credentials.access_token_secret.expose(),
            ),
            random: SystemRandom::new(),
        }
    }

    /// The `Authorization` header of a `method` request to `url` (its query signed with it), with
    /// a fresh nonce and the current time; an error only if the system has no random bytes or
    /// its clock is before 1970.
    pub fn authorization(&self, method: &str, url: &url::Url) -> Result<String, String> {
        let mut bytes = [0u8; 16];
        self.random
            .fill(&mut bytes)
            .map_err(|_| "the system gave no random bytes for the OAuth nonce".to_string())?;
        let nonce = faster_hex::hex_string(&bytes);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_string())?
            .as_secs();
        Ok(self.authorization_with(method, url, &nonce, timestamp))
    }

    /// The `Authorization` header with a given nonce and timestamp (tests, documented examples).
    pub fn authorization_with(
        &self,
        method: &str,
        url: &url::Url,
        nonce: &str,
        timestamp: u64,
    ) -> String {
        let mut oauth: Vec<(String, String)> = vec![
            (
                "oauth_consumer_key".into(),
                self.consumer_key.expose().into(),
            ),
            ("oauth_nonce".into(), nonce.into()),
            ("oauth_signature_method".into(), SIGNATURE_METHOD.into()),
            ("oauth_timestamp".into(), timestamp.to_string()),
            ("oauth_token".into(), self.access_token.expose().into()),
            ("oauth_version".into(), VERSION.into()),
        ];
        let mut signed = oauth.clone();
        signed.extend(
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
        let signature = sign(&self.key, &base_string(method, &base_uri(url), &signed));
        oauth.push(("oauth_signature".into(), signature));
        header(&oauth)
    }
}

/// The HMAC-SHA1 key: the consumer secret and the token secret, each encoded, joined by `&`.
pub fn signing_key(consumer_secret: &str, token_secret: &str) -> hmac::Key {
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes())
}

/// The signature of a base string: HMAC-SHA1, in standard Base64.
pub fn sign(key: &hmac::Key, base_string: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(key, base_string.as_bytes()))
}

/// The signature base string (RFC 5849 §3.4.1): the method in upper case, the base URI and the
/// normalized parameters, each encoded, joined by `&`. `params` are decoded names and values:
/// the `oauth_*` ones but `oauth_signature`, and the query's.
pub fn base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(base_uri),
        encode(&normalized)
    )
}

/// The base URI of a request's URL (RFC 5849 §3.4.1.2): scheme and host in lower case (the `url`
/// crate keeps them so), the port only when not the scheme's default, the path; no query.
pub fn base_uri(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// RFC 5849 §3.6 percent-encoding: UTF-8 bytes, all but `A-Z a-z 0-9 - . _ ~` as `%XX` in upper
/// case.
pub fn encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// The inverse of `encode` (any `%XX`, either case); `None` for a broken escape or bytes that
/// are not UTF-8.
pub fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `OAuth k="v", …` with every name and value encoded.
pub fn header(params: &[(String, String)]) -> String {
    let fields: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", encode(k), encode(v)))
        .collect();
    format!("OAuth {}", fields.join(", "))
}

/// The parameters of an `OAuth k="v", …` header, decoded; `None` if it is not one.
pub fn parse_header(header: &str) -> Option<Vec<(String, String)>> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("OAuth") {
        return None;
    }
    rest.split(',')
        .map(str::trim)
        .filter(|field| !field.is_empty())
        .map(|field| {
            let (name, value) = field.split_once('=')?;
            let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((decode(name.trim())?, decode(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // X's documentation, "Creating a signature" (the RFC 5849 worked example X publishes; its
    // signature recomputed with Python's hmac and hashlib before it was written here).
    const CONSUMER_KEY: &str = "xvz1evFS4wEEPTGEFPHBog";
    const CONSUMER_SECRET: &str = "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw";
    const TOKEN: &str = "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb";
    const TOKEN_SECRET: &str = "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE";
    const NONCE: &str = "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg";
    const TIMESTAMP: u64 = 1_318_622_958;
    const SIGNATURE: &str = "hCtSmYh+iHYCEqBWrE7C7hYmtUk=";
    const BASE_STRING: &str = "POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26oauth_token%3D370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521";

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn signs_x_s_documented_example() {
        let params = pairs(&[
            (
                "status",
                "Hello Ladies + Gentlemen, a signed OAuth request!",
            ),
            ("include_entities", "true"),
            ("oauth_consumer_key", CONSUMER_KEY),
            ("oauth_nonce", NONCE),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1318622958"),
            ("oauth_token", TOKEN),
            ("oauth_version", "1.0"),
        ]);
        let base = base_string(
            "post",
            "https://api.twitter.com/1.1/statuses/update.json",
            &params,
        );
        assert_eq!(base, BASE_STRING);
        let key = signing_key(CONSUMER_SECRET, TOKEN_SECRET);
        assert_eq!(sign(&key, &base), SIGNATURE);
    }

    #[test]
    fn the_header_signs_the_query_with_the_oauth_parameters() {
        // The example's parameters in the query rather than a form body: the same signature.
        let url = url::Url::parse(
            "https://API.Twitter.com:443/1.1/statuses/update.json?include_entities=true\
             &status=Hello%20Ladies%20%2B%20Gentlemen%2C%20a%20signed%20OAuth%20request%21",
        )
        .unwrap();
        let signer = Signer::new(&Credentials::new(
            CONSUMER_KEY,
            CONSUMER_SECRET,
            TOKEN,
            TOKEN_SECRET,
        ));
        let header = signer.authorization_with("POST", &url, NONCE, TIMESTAMP);
        assert!(header.starts_with("OAuth "), "{header}");
        assert!(
            header.contains("oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\""),
            "{header}"
        );
        let params = parse_header(&header).unwrap();
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("oauth_signature"), Some(SIGNATURE));
        assert_eq!(get("oauth_token"), Some(TOKEN));
        assert_eq!(get("oauth_timestamp"), Some("1318622958"));
        assert_eq!(get("oauth_signature_method"), Some("HMAC-SHA1"));
    }

    #[test]
    fn each_signature_has_a_nonce_of_its_own() {
        let signer = Signer::new(&Credentials::new("ck", "cs", "at", "ats"));
        let url =
            url::Url::parse("http://127.0.0.1:8480/12/accounts/abc/custom_audiences").unwrap();
        let nonce = |h: &str| {
            parse_header(h)
                .unwrap()
                .into_iter()
                .find(|(k, _)| k == "oauth_nonce")
                .unwrap()
                .1
        };
        let (a, b) = (
            signer.authorization("GET", &url).unwrap(),
            signer.authorization("GET", &url).unwrap(),
        );
        assert_ne!(nonce(&a), nonce(&b));
        assert_eq!(nonce(&a).len(), 32);
    }

    #[test]
    fn base_uris_keep_a_port_only_when_it_is_not_the_default() {
        let uri = |u: &str| base_uri(&url::Url::parse(u).unwrap());
        assert_eq!(
            uri("http://127.0.0.1:8480/12/accounts/a/custom_audiences?q=x"),
            "http://127.0.0.1:8480/12/accounts/a/custom_audiences"
        );
        assert_eq!(
            uri("HTTPS://Ads-API.X.com:443/12/accounts"),
            "https://ads-api.x.com/12/accounts"
        );
        assert_eq!(uri("http://localhost:80/a"), "http://localhost/a");
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters_and_decodes_back() {
        assert_eq!(encode("Az09-._~"), "Az09-._~");
        assert_eq!(encode("a b+c/=&%"), "a%20b%2Bc%2F%3D%26%25");
        assert_eq!(encode("é"), "%C3%A9");
        for text in ["Hello Ladies + Gentlemen!", "é/=&", ""] {
            assert_eq!(decode(&encode(text)).as_deref(), Some(text));
        }
        assert_eq!(decode("%c3%a9").as_deref(), Some("é"));
        assert_eq!(decode("%2"), None);
        assert_eq!(decode("%ZZ"), None);
        assert!(parse_header("Bearer abc").is_none());
        assert!(parse_header("OAuth oauth_token=unquoted").is_none());
    }

    #[test]
    fn credentials_are_redacted_from_messages_and_debug() {
        let c = Credentials::new("key-1", "secret-2", "token-3", "token-secret-4");
        assert_eq!(format!("{c:?}"), "Credentials(***)");
        let text = c.redact("bad token token-3 for key-1");
        assert!(
            !text.contains("token-3") && !text.contains("key-1"),
            "{text}"
        );
    }
}
