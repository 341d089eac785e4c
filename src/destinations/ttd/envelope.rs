//! UID2's encrypted envelope, both ways (shared/spec/platforms-more.md §B3; the uid2-client
//! SDK's `request_response_util.py`, `_encrypt_gcm` and `_decrypt_gcm`, and the operator's
//! `V2RequestUtil`): the operator takes no plain request, so every identity-map call is sealed
//! with the client secret, a 32-byte AES-256-GCM key issued with the API key.
//!
//! - A request is `0x01` (the version) ‖ IV (12 random bytes) ‖ AES-256-GCM of (the time in
//!   milliseconds, 8 bytes big-endian ‖ a random nonce, 8 bytes ‖ the JSON) ‖ the 16-byte tag.
//!   Sent as bytes (`Content-Type: application/octet-stream`, as the SDK's v3 client does) or
//!   Base64 text. The operator refuses a timestamp more than a minute or so from its clock, so
//!   a retry seals again rather than resending old bytes.
//! - An answer (HTTP 200 only; errors are plain JSON) is IV ‖ AES-256-GCM of (time ‖ the
//!   request's nonce ‖ the JSON) ‖ tag, without the version byte, in the form the request came.
//!   The nonce must come back: an answer to another request is refused.
//!
//! The operator side (open a request, seal an answer) is here too, for the sandbox's emulator,
//! so both ends are one reading of the format. Errors never show the secret or the payload.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The envelope's version byte.
pub const VERSION: u8 = 1;
/// AES-GCM's IV, 12 bytes.
pub const IV_LEN: usize = NONCE_LEN;
/// The request's nonce, which the answer echoes.
pub const NONCE_BYTES: usize = 8;
const TIMESTAMP_BYTES: usize = 8;
const TAG_LEN: usize = 16;
/// The shortest request the operator reads: version, IV, tag, timestamp and nonce.
pub const MIN_REQUEST_LEN: usize = 1 + IV_LEN + TAG_LEN + TIMESTAMP_BYTES + NONCE_BYTES;

/// A client secret: 32 bytes, written in Base64. Its `Debug` does not show it.
#[derive(Clone)]
pub struct ClientSecret([u8; 32]);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(***)")
    }
}

impl ClientSecret {
    /// The secret from its Base64 text; the error says what is wrong without the text.
    pub fn from_base64(text: &str) -> Result<ClientSecret, String> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            "not Base64 (its text is not shown): the client secret is the Base64 text issued with the UID2 API key"
                .to_string()
        })?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "{} bytes once decoded, where a client secret has 32 (its text is not shown): check that the whole secret was stored",
                bytes.len()
            )
        })?;
        Ok(ClientSecret(key))
    }

    pub fn from_bytes(key: [u8; 32]) -> ClientSecret {
        ClientSecret(key)
    }

    fn key(&self) -> LessSafeKey {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0).expect("32 bytes is an AES-256 key");
        LessSafeKey::new(unbound)
    }
}

/// A sealed request: its bytes, and the nonce its answer must echo.
pub struct Sealed {
    pub bytes: Vec<u8>,
    pub nonce: [u8; NONCE_BYTES],
}

/// Seals a request's JSON at `now_ms` with a fresh random IV and nonce.
pub fn seal(secret: &ClientSecret, json: &[u8], now_ms: i64) -> Result<Sealed, String> {
    let (mut iv, mut nonce) = ([0u8; IV_LEN], [0u8; NONCE_BYTES]);
    let rng = SystemRandom::new();
    rng.fill(&mut iv)
        .and_then(|_| rng.fill(&mut nonce))
        .map_err(|_| "the system's random number generator failed".to_string())?;
    Ok(Sealed {
        bytes: seal_with(secret, json, now_ms, nonce, iv),
        nonce,
    })
}

/// Seals a request with a given nonce and IV (the known-answer tests; `seal` draws them).
pub fn seal_with(
    secret: &ClientSecret,
    json: &[u8],
    now_ms: i64,
    nonce: [u8; NONCE_BYTES],
    iv: [u8; IV_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIN_REQUEST_LEN + json.len());
    out.push(VERSION);
    out.extend_from_slice(&encrypt(secret, &payload(now_ms, &nonce, json), iv));
    out
}

/// Opens an operator's answer (IV ‖ ciphertext ‖ tag): its JSON, once the nonce it echoes is
/// the request's.
pub fn open_answer(
    secret: &ClientSecret,
    answer: &[u8],
    nonce: &[u8; NONCE_BYTES],
) -> Result<Vec<u8>, String> {
    let plain = decrypt(secret, answer).ok_or(
        "the answer does not decrypt with the client secret (cut short, or not from this operator)",
    )?;
    if plain.len() < TIMESTAMP_BYTES + NONCE_BYTES {
        return Err("the decrypted answer is shorter than its timestamp and nonce".into());
    }
    if plain[TIMESTAMP_BYTES..TIMESTAMP_BYTES + NONCE_BYTES] != nonce[..] {
        return Err("the answer echoes another request's nonce".into());
    }
    Ok(plain[TIMESTAMP_BYTES + NONCE_BYTES..].to_vec())
}

/// An answer's bytes as sent: raw when it says `application/octet-stream`, else Base64 text
/// (the form a text request is answered in), else raw.
pub fn answer_bytes(content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let binary = content_type.is_some_and(|t| t.contains("application/octet-stream"));
    if binary {
        return body.to_vec();
    }
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    STANDARD.decode(&text).unwrap_or_else(|_| body.to_vec())
}

/// A request as the operator reads it.
#[derive(Debug)]
pub struct Opened {
    pub timestamp_ms: i64,
    pub nonce: [u8; NONCE_BYTES],
    pub json: Vec<u8>,
}

/// Opens a request as the operator does; the error is the operator's own message
/// (`V2RequestUtil.parseRequest`).
pub fn open_request(secret: &ClientSecret, envelope: &[u8]) -> Result<Opened, &'static str> {
    if envelope.len() < MIN_REQUEST_LEN {
        return Err("Invalid body: Body too short. Check encryption method.");
    }
    if envelope[0] != VERSION {
        return Err("Invalid body: Version mismatch.");
    }
    let plain = decrypt(secret, &envelope[1..])
        .ok_or("Invalid body: Check encryption key (ClientSecret)")?;
    let timestamp = plain[..TIMESTAMP_BYTES].try_into().expect("8 bytes");
    let nonce = plain[TIMESTAMP_BYTES..TIMESTAMP_BYTES + NONCE_BYTES]
        .try_into()
        .expect("8 bytes");
    Ok(Opened {
        timestamp_ms: i64::from_be_bytes(timestamp),
        nonce,
        json: plain[TIMESTAMP_BYTES + NONCE_BYTES..].to_vec(),
    })
}

/// Seals an answer to the request whose nonce is `nonce`, as the operator does.
pub fn seal_answer(
    secret: &ClientSecret,
    nonce: &[u8; NONCE_BYTES],
    json: &[u8],
    now_ms: i64,
    iv: [u8; IV_LEN],
) -> Vec<u8> {
    encrypt(secret, &payload(now_ms, nonce, json), iv)
}

/// A fresh IV (the operator's side draws one per answer).
pub fn random_iv() -> Result<[u8; IV_LEN], String> {
    let mut iv = [0u8; IV_LEN];
    SystemRandom::new()
        .fill(&mut iv)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    Ok(iv)
}

/// Timestamp ‖ nonce ‖ JSON.
fn payload(now_ms: i64, nonce: &[u8; NONCE_BYTES], json: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(TIMESTAMP_BYTES + NONCE_BYTES + json.len() + TAG_LEN);
    plain.extend_from_slice(&now_ms.to_be_bytes());
    plain.extend_from_slice(nonce);
    plain.extend_from_slice(json);
    plain
}

/// IV ‖ AES-256-GCM ciphertext ‖ tag (the SDK's `_encrypt_gcm`).
fn encrypt(secret: &ClientSecret, plain: &[u8], iv: [u8; IV_LEN]) -> Vec<u8> {
    let mut sealed = plain.to_vec();
    secret
        .key()
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut sealed)
        .expect("AES-GCM seals any length a request has");
    let mut out = Vec::with_capacity(IV_LEN + sealed.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&sealed);
    out
}

/// The plaintext of IV ‖ ciphertext ‖ tag, if the tag holds under `secret` (`_decrypt_gcm`).
fn decrypt(secret: &ClientSecret, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < IV_LEN + TAG_LEN {
        return None;
    }
    let iv: [u8; IV_LEN] = sealed[..IV_LEN].try_into().ok()?;
    let mut in_out = sealed[IV_LEN..].to_vec();
    let plain = secret
        .key()
        .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut in_out)
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known answers below were computed with the UID2 SDK (uid2-client 2.9.0):
    /// `b"\x01" + _encrypt_gcm(ts.to_bytes(8, "big") + nonce + body, iv, secret)` for the request,
    /// as `create_envelope` builds it, and `_encrypt_gcm(...)` for the answer, which the SDK's
    /// `_decrypt_payload(secret, answer, nonce)` reads back to `ANSWER_JSON`.
    const SECRET: [u8; 32] = {
        let mut key = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            key[i] = i as u8;
            i += 1;
        }
        key
    };
    const IV: [u8; 12] = [
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
    ];
    const ANSWER_IV: [u8; 12] = [
        0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb,
    ];
    const NONCE: [u8; 8] = [0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe];
    /// 2025-11-25T00:00:00Z.
    const NOW_MS: i64 = 1_764_028_800_000;
    const REQUEST_JSON: &str = r#"{"email_hash":["tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ="]}"#;
    const REQUEST: &str = "AaChoqOkpaanqKmqq+YYfbf9hF6/clfTpZ/AHCALjjx9894uM/RvVe5dkS4jpjsqlsZ2GgoW/UWrWQrSqQFKcH0XnUw9FhYzP9JJ78eA3/IJH+PRqKKwriWtk7EyW5blkkHroAvzIqB1juF4";
    const ANSWER_JSON: &str = r#"{"body":{"email_hash":[{"u":"AdvIvSiaum0P5s3X/7X8h8sz+OhF2IG8DNbEnkWSbYM=","p":null,"r":1767225600}]},"status":"success"}"#;
    const ANSWER: &str = "sLGys7S1tre4ubq7mVVbMVSC515XysPUVedUPP8eK71xV60PJeznnD3rnkltKlBSQeT9w4cugnAe+ObDZBtErnpOL8Advx8DXLQXp4qABsdwlymyX+7rGaZCrFMD/qLl+xoskMjZVLJbezXRFswSd+ylFCxveSzroOj1tj2GysoO3+9JDGaDrG0sFQA62MTtZn3gDB815GENIOLl33VO44RFTauM";

    fn secret() -> ClientSecret {
        ClientSecret::from_bytes(SECRET)
    }

    #[test]
    fn a_request_is_sealed_byte_for_byte_as_the_sdk_seals_it() {
        let sealed = seal_with(&secret(), REQUEST_JSON.as_bytes(), NOW_MS, NONCE, IV);
        assert_eq!(STANDARD.encode(&sealed), REQUEST);
        let opened = open_request(&secret(), &sealed).unwrap();
        assert_eq!(opened.timestamp_ms, NOW_MS);
        assert_eq!(opened.nonce, NONCE);
        assert_eq!(opened.json, REQUEST_JSON.as_bytes());
    }

    #[test]
    fn an_answer_sealed_as_the_sdk_reads_it_opens_and_its_nonce_is_checked() {
        let answer = STANDARD.decode(ANSWER).unwrap();
        let json = open_answer(&secret(), &answer, &NONCE).unwrap();
        assert_eq!(json, ANSWER_JSON.as_bytes());
        let sealed = seal_answer(
            &secret(),
            &NONCE,
            ANSWER_JSON.as_bytes(),
            NOW_MS + 1,
            ANSWER_IV,
        );
        assert_eq!(
            STANDARD.encode(&sealed),
            ANSWER,
            "the operator side seals the same"
        );
        let other_nonce = [0u8; 8];
        assert!(
            open_answer(&secret(), &answer, &other_nonce)
                .unwrap_err()
                .contains("nonce")
        );
    }

    #[test]
    fn sealing_round_trips_with_fresh_randomness_and_fails_under_another_secret() {
        let a = seal(&secret(), b"{}", NOW_MS).unwrap();
        let b = seal(&secret(), b"{}", NOW_MS).unwrap();
        assert_ne!(a.bytes, b.bytes, "a fresh IV and nonce each time");
        let opened = open_request(&secret(), &a.bytes).unwrap();
        assert_eq!(
            (opened.json.as_slice(), opened.nonce),
            (&b"{}"[..], a.nonce)
        );
        let other = ClientSecret::from_bytes([7u8; 32]);
        assert_eq!(
            open_request(&other, &a.bytes).unwrap_err(),
            "Invalid body: Check encryption key (ClientSecret)"
        );
        let mut versioned = a.bytes.clone();
        versioned[0] = 2;
        assert_eq!(
            open_request(&secret(), &versioned).unwrap_err(),
            "Invalid body: Version mismatch."
        );
        assert!(open_request(&secret(), &a.bytes[..20]).is_err());
        let iv = random_iv().unwrap();
        let answer = seal_answer(&secret(), &a.nonce, b"[1]", NOW_MS, iv);
        assert_eq!(open_answer(&secret(), &answer, &a.nonce).unwrap(), b"[1]");
        assert!(open_answer(&other, &answer, &a.nonce).is_err());
    }

    #[test]
    fn answers_come_as_bytes_or_base64_text() {
        let raw = vec![0u8, 1, 2, 255];
        assert_eq!(answer_bytes(Some("application/octet-stream"), &raw), raw);
        let text = format!("{}\n", STANDARD.encode(&raw));
        assert_eq!(answer_bytes(Some("text/plain"), text.as_bytes()), raw);
        assert_eq!(answer_bytes(None, text.as_bytes()), raw);
    }

    #[test]
    fn a_secret_is_the_base64_of_32_bytes_and_errors_do_not_show_it() {
        let text = STANDARD.encode(SECRET);
        assert!(ClientSecret::from_base64(&format!(" {text}\n")).is_ok());
        let short = STANDARD.encode([1u8; 16]);
        let e = ClientSecret::from_base64(&short).unwrap_err();
        assert!(e.contains("16 bytes") && !e.contains(&short), "{e}");
        let e = ClientSecret::from_base64("not base64 at all!").unwrap_err();
        assert!(e.contains("not Base64") && !e.contains("at all"), "{e}");
        assert_eq!(format!("{:?}", secret()), "ClientSecret(***)");
    }
}
