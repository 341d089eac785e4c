//! TikTok API for Business emulator: custom audiences from customer files (shared/spec/
//! platforms.md §3), under `/open_api/{version}/dmp/custom_audience/`: `file/upload/`
//! (multipart, MD5 `file_signature` checked, one hash per line), `create/`, `update/` (`APPEND`,
//! `REMOVE`, `REPLACE`; REPLACE when no action is given, as TikTok does) and `list/`.
//!
//! Every answer is the envelope `{code, message, request_id, data}`, HTTP 200 even for business
//! errors: 40002 for parameter errors, 40105 for a missing token, 40100 past the QPS limit, 50000
//! for system errors (the codes are UNCONFIRMED; their classes are what the spec documents).
//! Injected transient errors are half gateway 500s, half code 50000.

use super::AppState;
use super::faults::Fault;
use super::state::CallWindow;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const CALCULATE_TYPES: &[&str] = &[
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "GAID_SHA256",
    "IDFA_MD5",
    "GAID_MD5",
    "FIRST_SHA256",
    "FIRST_MD5",
];
const PARAM_ERROR: u64 = 40002;
const TOKEN_ERROR: u64 = 40105;
const THROTTLED: u64 = 40100;
const SYSTEM_ERROR: u64 = 50000;

#[derive(Clone, Debug)]
pub struct TikTokLimits {
    pub max_file_bytes: usize,
    pub max_files_per_call: usize,
    /// An update fails if the audience would end smaller (the spec: "< 1 000").
    pub min_audience_size: usize,
    /// The app's QPS; `None` turns throttling off.
    pub requests_per_second: Option<u64>,
}

impl Default for TikTokLimits {
    fn default() -> TikTokLimits {
        TikTokLimits {
            max_file_bytes: crate::destinations::tiktok::MAX_FILE_BYTES,
            max_files_per_call: crate::destinations::tiktok::MAX_FILES_PER_CALL,
            min_audience_size: 1_000,
            requests_per_second: None,
        }
    }
}

struct UploadedFile {
    advertiser_id: String,
    calculate_type: String,
    hashes: Vec<String>,
}

#[derive(Default)]
pub struct TikTokState {
    pub limits: Mutex<TikTokLimits>,
    calls: CallWindow,
    files: Mutex<HashMap<String, UploadedFile>>,
    /// Audience id -> its calculate_type.
    types: Mutex<HashMap<String, String>>,
    next: AtomicU64,
}

impl TikTokState {
    /// Forgets files and audience types (with the store's audiences).
    pub fn reset(&self) {
        self.files.lock().unwrap().clear();
        self.types.lock().unwrap().clear();
    }
}

fn envelope(app: &AppState, code: u64, message: &str, data: Value) -> Response {
    let n = app.tiktok.next.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({
        "code": code,
        "message": message,
        "request_id": format!("sandbox{n:016}"),
        "data": data,
    }))
    .into_response()
}

fn rejected(app: &AppState, code: u64, message: &str) -> Response {
    app.store.with(|s| s.rejected += 1);
    envelope(app, code, message, json!({}))
}

/// Faults, the QPS limit and the token, shared by every route; `Err` ends the request.
async fn gate(app: &AppState, headers: &HeaderMap) -> Result<Fault, Response> {
    app.store.with(|s| s.requests += 1);
    let fault = app
        .faults
        .decide(headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()))
        .await;
    match fault {
        Fault::Error => {
            app.store.with(|s| s.injected_errors += 1);
            return Err(if app.faults.roll() < 0.5 {
                (StatusCode::INTERNAL_SERVER_ERROR, "upstream error").into_response()
            } else {
                envelope(
                    app,
                    SYSTEM_ERROR,
                    "System error, please try again later.",
                    json!({}),
                )
            });
        }
        Fault::Throttle => {
            app.store.with(|s| s.injected_throttles += 1);
            return Err(envelope(
                app,
                THROTTLED,
                "Too many requests. Please retry in some time.",
                json!({}),
            ));
        }
        _ => {}
    }
    let qps = app.tiktok.limits.lock().unwrap().requests_per_second;
    if !app.tiktok.calls.admit(qps, Duration::from_secs(1)) {
        app.store.with(|s| s.rate_limited += 1);
        return Err(envelope(
            app,
            THROTTLED,
            "Too many requests. Please retry in some time.",
            json!({}),
        ));
    }
    let token = headers
        .get("access-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| !t.is_empty());
    if !token {
        return Err(envelope(
            app,
            TOKEN_ERROR,
            "Access token is invalid or has expired: pass it in the Access-Token header.",
            json!({}),
        ));
    }
    Ok(fault)
}

fn finish(app: &AppState, fault: Fault, response: Response) -> Response {
    if fault == Fault::Drop {
        app.store.with(|s| s.injected_drops += 1);
        return super::drop_connection(response);
    }
    response
}

/// `file/upload/`: checks the file's suffix, size, signature and lines; answers its `file_path`.
pub async fn upload(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    app.store.with(|s| {
        s.upload_requests += 1;
        s.max_bytes_per_request = s.max_bytes_per_request.max(body.len() as u64);
    });
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(parts) = multipart(content_type, &body) else {
        return rejected(
            &app,
            PARAM_ERROR,
            "The request must be multipart/form-data.",
        );
    };
    let field = |name: &str| {
        parts
            .get(name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let (Some(advertiser_id), Some(calculate_type), Some(signature)) = (
        field("advertiser_id"),
        field("calculate_type"),
        field("file_signature"),
    ) else {
        return rejected(
            &app,
            PARAM_ERROR,
            "advertiser_id, calculate_type, file_signature and file are required.",
        );
    };
    if !CALCULATE_TYPES.contains(&calculate_type.as_str()) {
        return rejected(
            &app,
            PARAM_ERROR,
            &format!("calculate_type: {calculate_type} is not a valid enum value."),
        );
    }
    let Some((Some(file_name), file)) = parts.get("file") else {
        return rejected(&app, PARAM_ERROR, "file is required.");
    };
    if !(file_name.ends_with(".csv") || file_name.ends_with(".txt")) {
        return rejected(&app, PARAM_ERROR, "The file suffix must be .csv or .txt.");
    }
    let limits = app.tiktok.limits.lock().unwrap().clone();
    if file.len() > limits.max_file_bytes {
        return rejected(
            &app,
            PARAM_ERROR,
            &format!("The file exceeds {} bytes.", limits.max_file_bytes),
        );
    }
    if crate::destinations::tiktok::request::md5_hex(file) != signature.to_ascii_lowercase() {
        app.store.with(|s| s.signature_mismatches += 1);
        return rejected(
            &app,
            PARAM_ERROR,
            "file_signature does not match the MD5 of the file.",
        );
    }
    let hashes = match file_hashes(file, &calculate_type) {
        Ok(h) => h,
        Err(message) => return rejected(&app, PARAM_ERROR, &message),
    };
    app.store.with(|s| {
        s.files_uploaded += 1;
        s.max_rows_per_request = s.max_rows_per_request.max(hashes.len() as u64);
    });
    let path = format!(
        "sandbox/custom_audience/{}.txt",
        app.tiktok.next.fetch_add(1, Ordering::Relaxed)
    );
    app.tiktok.files.lock().unwrap().insert(
        path.clone(),
        UploadedFile {
            advertiser_id,
            calculate_type,
            hashes,
        },
    );
    let response = envelope(&app, 0, "OK", json!({ "file_path": path }));
    finish(&app, fault, response)
}

/// The hashes of an uploaded file, one per line (blank lines skipped), or which line is not a
/// lowercase hex value of `calculate_type`'s width.
fn file_hashes(file: &[u8], calculate_type: &str) -> Result<Vec<String>, String> {
    let width = if calculate_type.ends_with("_MD5") {
        32
    } else {
        64
    };
    let mut hashes = vec![];
    for (i, line) in String::from_utf8_lossy(file).lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.len() != width
            || !line
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "Line {} is not a lowercase hex {calculate_type} value.",
                i + 1
            ));
        }
        hashes.push(line.to_string());
    }
    Ok(hashes)
}

/// The files' members as the store keeps them (`{"EMAIL_SHA256": hash}`), or what is wrong.
fn file_members(
    app: &AppState,
    advertiser_id: &str,
    calculate_type: &str,
    paths: &[Value],
) -> Result<Vec<(String, Vec<String>)>, String> {
    let max = app.tiktok.limits.lock().unwrap().max_files_per_call;
    app.store
        .with(|s| s.max_files_per_request = s.max_files_per_request.max(paths.len() as u64));
    if paths.len() > max {
        return Err(format!("file_paths: at most {max} files per call."));
    }
    let files = app.tiktok.files.lock().unwrap();
    let mut out = vec![];
    for p in paths {
        let path = p.as_str().unwrap_or_default();
        let Some(f) = files.get(path).filter(|f| f.advertiser_id == advertiser_id) else {
            return Err(format!(
                "file_paths: {path} is not a file of this advertiser."
            ));
        };
        if f.calculate_type != calculate_type {
            return Err(format!(
                "file_paths: {path} holds {} but the audience is {calculate_type}.",
                f.calculate_type
            ));
        }
        let members = f
            .hashes
            .iter()
            .map(|h| super::state::single_key_member(calculate_type, h))
            .collect();
        out.push((path.to_string(), members));
    }
    Ok(out)
}

/// `create/`: a new audience from files.
pub async fn create(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let advertiser_id = v["advertiser_id"].as_str().unwrap_or_default();
    let name = v["custom_audience_name"].as_str().unwrap_or_default();
    let calculate_type = v["calculate_type"].as_str().unwrap_or_default();
    if advertiser_id.is_empty() || name.is_empty() || name.chars().count() > 128 {
        return rejected(
            &app,
            PARAM_ERROR,
            "advertiser_id and custom_audience_name (1 to 128 characters) are required.",
        );
    }
    if !CALCULATE_TYPES.contains(&calculate_type) {
        return rejected(&app, PARAM_ERROR, "calculate_type is required.");
    }
    let paths = v["file_paths"].as_array().cloned().unwrap_or_default();
    if paths.is_empty() {
        return rejected(&app, PARAM_ERROR, "file_paths is required.");
    }
    let files = match file_members(&app, advertiser_id, calculate_type, &paths) {
        Ok(f) => f,
        Err(m) => return rejected(&app, PARAM_ERROR, &m),
    };
    // The spec states the 1,000 minimum for updates; whether a create below it fails is
    // UNCONFIRMED, so a new audience may start smaller (it just cannot be targeted yet).
    let audience = app.store.create("tiktok", advertiser_id, name);
    app.tiktok
        .types
        .lock()
        .unwrap()
        .insert(audience.id.clone(), calculate_type.to_string());
    for (path, members) in files {
        app.store.apply(
            &audience.id,
            Some((path, 0)),
            true,
            members.into_iter().collect(),
            false,
        );
    }
    let response = envelope(&app, 0, "OK", json!({ "custom_audience_id": audience.id }));
    finish(&app, fault, response)
}

/// `update/`: APPEND, REMOVE or REPLACE files; fails if the audience would end below the minimum.
pub async fn update(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let advertiser_id = v["advertiser_id"].as_str().unwrap_or_default();
    let id = v["custom_audience_id"].as_str().unwrap_or_default();
    let Some(audience) = app
        .store
        .get(id)
        .filter(|a| a.platform == "tiktok" && a.account == advertiser_id)
    else {
        return rejected(
            &app,
            PARAM_ERROR,
            &format!("custom_audience_id: {id} is not an audience of this advertiser."),
        );
    };
    // TikTok's default action is REPLACE, which is why clients should always send one.
    let action = v["action"].as_str().unwrap_or("REPLACE");
    if !["APPEND", "REMOVE", "REPLACE"].contains(&action) {
        return rejected(
            &app,
            PARAM_ERROR,
            "action must be APPEND, REMOVE or REPLACE.",
        );
    }
    let calculate_type = app
        .tiktok
        .types
        .lock()
        .unwrap()
        .get(id)
        .cloned()
        .unwrap_or_default();
    let paths = v["file_paths"].as_array().cloned().unwrap_or_default();
    app.store.with(|s| s.upload_requests += 1);
    let files = match file_members(&app, advertiser_id, &calculate_type, &paths) {
        Ok(f) => f,
        Err(m) => return rejected(&app, PARAM_ERROR, &m),
    };
    let mut after: BTreeSet<String> = if action == "REPLACE" {
        BTreeSet::new()
    } else {
        app.store.members_set(id)
    };
    for (_, members) in &files {
        for m in members {
            if action == "REMOVE" {
                after.remove(m);
            } else {
                after.insert(m.clone());
            }
        }
    }
    let min = app.tiktok.limits.lock().unwrap().min_audience_size;
    if after.len() < min {
        return rejected(
            &app,
            PARAM_ERROR,
            &format!(
                "The audience {} would have {} users after this {action}; custom audiences need at least {min}.",
                audience.id,
                after.len()
            ),
        );
    }
    for (i, (path, members)) in files.into_iter().enumerate() {
        let replace = action == "REPLACE" && i == 0;
        app.store.apply(
            id,
            Some((path, 0)),
            action != "REMOVE",
            members.into_iter().collect(),
            replace,
        );
    }
    let response = envelope(&app, 0, "OK", json!({}));
    finish(&app, fault, response)
}

/// `list/`: the advertiser's audiences, paged.
pub async fn list(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let fault = match gate(&app, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let advertiser_id = q.get("advertiser_id").cloned().unwrap_or_default();
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let page_size: usize = q
        .get("page_size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(10);
    if !(1..=100).contains(&page_size) {
        return rejected(&app, PARAM_ERROR, "page_size must be between 1 and 100.");
    }
    let types = app.tiktok.types.lock().unwrap().clone();
    let all: Vec<Value> = app
        .store
        .list()
        .into_iter()
        .filter(|a| a.platform == "tiktok" && a.account == advertiser_id)
        .map(|a| {
            json!({
                "audience_id": a.id, "name": a.name, "cover_num": a.size,
                "calculate_type": types.get(&a.id), "is_valid": true,
            })
        })
        .collect();
    let total_page = all.len().div_ceil(page_size).max(1);
    let list: Vec<Value> = all
        .iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .cloned()
        .collect();
    let response = envelope(
        &app,
        0,
        "OK",
        json!({
            "list": list,
            "page_info": {"page": page, "page_size": page_size, "total_number": all.len(), "total_page": total_page},
        }),
    );
    finish(&app, fault, response)
}

/// The parts of a `multipart/form-data` body by name: file name (for files) and content.
fn multipart(content_type: &str, body: &[u8]) -> Option<BTreeMap<String, (Option<String>, Bytes)>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter has no line break before it.
    let mut rest = body.strip_prefix(format!("--{boundary}").as_bytes())?;
    let mut parts = BTreeMap::new();
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n")?;
        let headers_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..headers_end]).ok()?;
        let content = &rest[headers_end + 4..];
        let end = find(content, delimiter.as_bytes())?;
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let param = |key: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
        };
        parts.insert(
            param("name")?,
            (param("filename"), Bytes::copy_from_slice(&content[..end])),
        );
        rest = &content[end + delimiter.len()..];
    }
    Some(parts)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_connector_sends() {
        let m = crate::destinations::tiktok::request::multipart(
            &[("advertiser_id", "7"), ("file_signature", "abc")],
            "f.txt",
            b"aa\nbb\n",
        );
        let parts = multipart(&m.content_type, &m.body).unwrap();
        assert_eq!(parts["advertiser_id"].1, "7");
        assert_eq!(parts["file_signature"].1, "abc");
        assert_eq!(parts["file"].0.as_deref(), Some("f.txt"));
        assert_eq!(parts["file"].1, "aa\nbb\n");
        assert!(multipart("multipart/form-data; boundary=x", b"garbage").is_none());
    }
}
