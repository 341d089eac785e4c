//! Destinations against a hostile network (real HTTP on loopback): a platform address that
//! answers every request with a redirect to another host must not make the connectors send their
//! tokens there. The redirect is a permanent error (exit code 2) that names the host it pointed
//! to and never the token, and the other host receives nothing. The sandbox's REST recorder shows
//! secret headers only as a prefix of their SHA-256.
//!
//! The hostile servers are written here with `std::net`: a redirecting server on 127.0.0.1 that
//! answers `307 Temporary Redirect` to the same path on 127.0.0.2 (Linux routes all of
//! 127.0.0.0/8 to loopback), and a "foreign" server on 127.0.0.2 that records every request's
//! raw bytes and answers `200 {}`. Both stop by themselves (a deadline on accepting, timeouts on
//! reading), so a test never hangs on them.
//!
//! No assertion message prints a token: outputs and recorded requests are shown with every
//! secret replaced by `<secret>`.

use crate::common;

use activator::sandbox::SandboxConfig;
use common::SandboxFixture as Fixture;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const DAY: &str = "2026-11-25";

const META_TOKEN: &str = "EAAB-redirect-secret-91f3";
const TIKTOK_TOKEN: &str = "tt-redirect-secret-6c2e";
const CRM_TOKEN: &str = "crm-redirect-secret-b7d4";
const CRM_KEY: &str = "crm-key-redirect-secret-58a1";

/// The address the redirects point to.
const FOREIGN_HOST: &str = "127.0.0.2";

/// How long the servers accept connections.
const SERVE_FOR: Duration = Duration::from_secs(60);
/// How long one connection may take to send its request.
const CONNECTION_LIMIT: Duration = Duration::from_secs(10);
/// A request head larger than this is not read further.
const MAX_HEAD: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// The hostile servers.
// ---------------------------------------------------------------------------------------------

type Handler = Arc<dyn Fn(TcpStream) + Send + Sync>;

/// Accepts connections on `listener` until `stop` is set or `SERVE_FOR` has passed, each handled
/// on a thread of its own; returns once every connection's thread has finished.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>, handler: Handler) -> JoinHandle<()> {
    listener
        .set_nonblocking(true)
        .expect("a nonblocking listener");
    std::thread::spawn(move || {
        let deadline = Instant::now() + SERVE_FOR;
        let mut workers = vec![];
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    workers.push(std::thread::spawn(move || (*handler)(stream)));
                }
                // WouldBlock (nobody is connecting), or a transient accept error.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        drop(listener);
        for w in workers {
            let _ = w.join();
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    find(haystack, needle.as_bytes()).is_some()
}

/// Reads more of the request into `buf`; false at the end of the stream, on an error or a
/// timeout, or once the connection has taken `CONNECTION_LIMIT`.
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, started: Instant) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if started.elapsed() > CONNECTION_LIMIT {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Whether `body` holds a whole chunked body (through the last chunk and the trailers).
fn chunked_complete(mut body: &[u8]) -> bool {
    loop {
        let Some(line_end) = find(body, b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            // Not chunked after all: read no further.
            return true;
        };
        body = &body[line_end + 2..];
        if size == 0 {
            // No trailers (an empty line), or trailers ending with one.
            return body.starts_with(b"\r\n") || find(body, b"\r\n\r\n").is_some();
        }
        if body.len() < size + 2 {
            return false;
        }
        body = &body[size + 2..];
    }
}

/// One HTTP/1.1 request's raw bytes: the head, and the body by `Content-Length` or chunked
/// encoding. What arrived, if the client stopped sending early; empty if it sent nothing.
fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let started = Instant::now();
    // Accepted from a nonblocking listener: make sure reads block (with a timeout).
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD || !read_more(stream, &mut buf, started) {
            return buf;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| -> Option<String> {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        while !chunked_complete(&buf[head_end..]) {
            if !read_more(stream, &mut buf, started) {
                break;
            }
        }
    } else if let Some(n) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < head_end + n {
            if !read_more(stream, &mut buf, started) {
                break;
            }
        }
    }
    buf
}

/// The request line (`POST /path HTTP/1.1`) of a request's raw bytes.
fn request_line(request: &[u8]) -> Option<String> {
    let end = find(request, b"\r\n")?;
    let line = String::from_utf8_lossy(&request[..end]).into_owned();
    (line.split(' ').count() == 3).then_some(line)
}

fn answer(stream: &mut TcpStream, response: &[u8]) {
    let _ = stream.write_all(response);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
}

/// What the hostile servers saw, once they have stopped.
struct Seen {
    /// Requests the redirecting server answered with a redirect.
    redirected: usize,
    /// Their request lines (method, path and query).
    redirected_lines: Vec<String>,
    /// Requests that reached the foreign host.
    foreign_requests: usize,
    /// Their raw bytes, one after the other.
    foreign_bytes: Vec<u8>,
}

/// A redirecting server on 127.0.0.1 and the foreign host it redirects to, on 127.0.0.2.
struct Hostile {
    /// `http://127.0.0.1:{port}`: the redirecting server.
    url: String,
    port: u16,
    foreign_port: u16,
    redirected: Arc<AtomicUsize>,
    redirected_lines: Arc<Mutex<Vec<String>>>,
    foreign_requests: Arc<AtomicUsize>,
    foreign_bytes: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Hostile {
    fn start() -> Hostile {
        let stop = Arc::new(AtomicBool::new(false));

        let foreign = TcpListener::bind((FOREIGN_HOST, 0)).unwrap_or_else(|e| {
            panic!(
                "cannot listen on {FOREIGN_HOST} ({e}); the test needs all of 127.0.0.0/8 \
                 routed to loopback, as Linux does"
            )
        });
        let foreign_port = foreign.local_addr().unwrap().port();
        let foreign_requests = Arc::new(AtomicUsize::new(0));
        let foreign_bytes = Arc::new(Mutex::new(Vec::new()));
        let foreign_handler: Handler = {
            let requests = foreign_requests.clone();
            let bytes = foreign_bytes.clone();
            Arc::new(move |mut stream: TcpStream| {
                let request = read_request(&mut stream);
                if request.is_empty() {
                    return;
                }
                requests.fetch_add(1, Ordering::SeqCst);
                bytes.lock().unwrap().extend_from_slice(&request);
                answer(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            })
        };

        let redirecting = TcpListener::bind(("127.0.0.1", 0)).expect("listen on 127.0.0.1");
        let port = redirecting.local_addr().unwrap().port();
        let redirected = Arc::new(AtomicUsize::new(0));
        let redirected_lines = Arc::new(Mutex::new(Vec::new()));
        let redirect_handler: Handler = {
            let count = redirected.clone();
            let lines = redirected_lines.clone();
            Arc::new(move |mut stream: TcpStream| {
                let request = read_request(&mut stream);
                let Some(line) = request_line(&request) else {
                    return;
                };
                let target = line.split(' ').nth(1).unwrap_or("/").to_string();
                count.fetch_add(1, Ordering::SeqCst);
                lines.lock().unwrap().push(line);
                let response = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\n\
                     Location: http://{FOREIGN_HOST}:{foreign_port}{target}\r\n\
                     Content-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                );
                answer(&mut stream, response.as_bytes());
            })
        };

        let threads = vec![
            serve(foreign, stop.clone(), foreign_handler),
            serve(redirecting, stop.clone(), redirect_handler),
        ];
        Hostile {
            url: format!("http://127.0.0.1:{port}"),
            port,
            foreign_port,
            redirected,
            redirected_lines,
            foreign_requests,
            foreign_bytes,
            stop,
            threads,
        }
    }

    /// Stops both servers and waits until every connection has been handled.
    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops the servers and says what they saw.
    fn finish(&mut self) -> Seen {
        self.shut_down();
        Seen {
            redirected: self.redirected.load(Ordering::SeqCst),
            redirected_lines: self.redirected_lines.lock().unwrap().clone(),
            foreign_requests: self.foreign_requests.load(Ordering::SeqCst),
            foreign_bytes: self.foreign_bytes.lock().unwrap().clone(),
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.shut_down();
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// `text` with every secret replaced by `<secret>`, for assertion messages.
fn redacted(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(*s, "<secret>"))
}

/// At most the first `n` characters of `text`.
fn head(text: &str, n: usize) -> &str {
    text.char_indices().nth(n).map_or(text, |(i, _)| &text[..i])
}

/// The form the sandbox's REST recorder keeps a secret header in: `sha256:` and the first 12
/// lowercase hex digits of the SHA-256 of the whole value, then `…`.
fn recorded_form(value: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{}…", &hex[..12])
}

/// Sends `request` whole to `addr` and reads the answer until the server closes.
fn exchange(addr: impl ToSocketAddrs, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// Runs a job over generated CRM data (an export, and the destination `destination` makes from
/// the redirecting server's URL) with `env`, whose values are the secrets, and checks that the
/// redirect to the foreign host is refused: exit code 2, a message naming the foreign host and
/// no secret, and nothing sent to the foreign host.
fn assert_redirect_refused(
    label: &str,
    destination: impl FnOnce(&str) -> String,
    env: &[(&str, &str)],
) {
    let secrets: Vec<&str> = env.iter().map(|(_, v)| *v).collect();
    let f = Fixture::new(SandboxConfig::default());
    // Generated before the servers start, so a first run's data generation does not use up
    // their time.
    generated_data(5_000, 3);
    let mut hostile = Hostile::start();
    let job = f.crm_job(100, &destination(&hostile.url));
    let (code, out) = f.run_job(&job, DAY, env);
    let seen = hostile.finish();
    let shown_out = redacted(&out, &secrets);
    let shown_lines = redacted(&seen.redirected_lines.join("\n"), &secrets);

    assert!(
        seen.redirected > 0,
        "{label}: the run never reached the redirecting server; exit code {code}; output:\n{shown_out}"
    );
    for &(name, secret) in env {
        assert!(
            !contains(&seen.foreign_bytes, secret),
            "{label}: the foreign host {FOREIGN_HOST} received the secret in {name} \
             ({} requests reached it; redirected requests:\n{shown_lines})",
            seen.foreign_requests
        );
    }
    assert_eq!(
        seen.foreign_requests,
        0,
        "{label}: requests reached the foreign host {FOREIGN_HOST} (first bytes, secrets hidden: \
         {:?}); redirected requests:\n{shown_lines}",
        head(
            &redacted(&String::from_utf8_lossy(&seen.foreign_bytes), &secrets),
            600
        )
    );
    assert_eq!(
        code, 2,
        "{label}: a refused redirect is a permanent error; output:\n{shown_out}"
    );
    assert!(
        out.contains(FOREIGN_HOST),
        "{label}: the error does not name the host the redirect pointed to ({FOREIGN_HOST}); \
         output:\n{shown_out}"
    );
    for &(name, secret) in env {
        assert!(
            !out.contains(secret),
            "{label}: the secret in {name} is in the output (shown hidden):\n{shown_out}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

/// The harness itself: the redirecting server answers 307 to the same path and query on the
/// foreign host, which reads a chunked body whole and records it.
#[test]
fn the_hostile_servers_redirect_and_record() {
    let mut hostile = Hostile::start();
    let response = exchange(
        ("127.0.0.1", hostile.port),
        b"POST /v1/members?page=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert!(
        response.starts_with("HTTP/1.1 307 "),
        "redirecting server answered: {response}"
    );
    let location = format!(
        "Location: http://{FOREIGN_HOST}:{}/v1/members?page=2\r\n",
        hostile.foreign_port
    );
    assert!(response.contains(&location), "{response}");

    let response = exchange(
        (FOREIGN_HOST, hostile.foreign_port),
        b"POST /v1/members?page=2 HTTP/1.1\r\nHost: 127.0.0.2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert!(
        response.starts_with("HTTP/1.1 200 ") && response.ends_with("{}"),
        "foreign host answered: {response}"
    );

    let seen = hostile.finish();
    assert_eq!(seen.redirected, 1);
    assert_eq!(
        seen.redirected_lines,
        vec!["POST /v1/members?page=2 HTTP/1.1".to_string()]
    );
    assert_eq!(seen.foreign_requests, 1);
    assert!(
        seen.foreign_bytes
            .ends_with(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&seen.foreign_bytes)
    );
}

/// Meta sends its token in the upload's JSON body, which a followed 307 would send again.
#[test]
fn meta_does_not_follow_a_redirect_to_another_host() {
    assert_redirect_refused(
        "meta",
        |url| {
            format!(
                r#"type = "meta"
ad_account_id = "1234567890"
audience_id = "123"
access_token = "env:META_ACCESS_TOKEN"
base_url = "{url}""#
            )
        },
        &[("META_ACCESS_TOKEN", META_TOKEN)],
    );
}

/// TikTok sends its token in an `Access-Token` header, which reqwest keeps on a redirect to
/// another host (it strips only `Authorization` and cookies). The audience is found by name, so
/// the first request is the audience list.
#[test]
fn tiktok_does_not_follow_a_redirect_to_another_host() {
    assert_redirect_refused(
        "tiktok",
        |url| {
            format!(
                r#"type = "tiktok"
advertiser_id = "7000000001"
audience = "redirected"
access_token = "env:TIKTOK_ACCESS_TOKEN"
base_url = "{url}"
requests_per_second = 200"#
            )
        },
        &[("TIKTOK_ACCESS_TOKEN", TIKTOK_TOKEN)],
    );
}

/// A REST destination's secret headers: `Authorization`, and an API key header that reqwest
/// would forward to another host.
#[test]
fn rest_does_not_follow_a_redirect_to_another_host() {
    assert_redirect_refused(
        "rest",
        |url| {
            format!(
                r#"type = "rest"
name = "crm"
url = "{url}/members"
headers = {{ Authorization = "Bearer env:CRM_TOKEN", X-Api-Key = "env:CRM_KEY" }}"#
            )
        },
        &[("CRM_TOKEN", CRM_TOKEN), ("CRM_KEY", CRM_KEY)],
    );
}

/// Runs a REST job against the fixture's recording endpoint `crm` with `headers` (the body of
/// the `headers` inline table) and `env`, and returns what `GET /_sandbox/rest/crm` shows: the
/// raw text (checked for the secrets, which are `env`'s values) and the recorded requests.
fn recorded_over_http(f: &Fixture, headers: &str, env: &[(&str, &str)]) -> Vec<Value> {
    let secrets: Vec<&str> = env.iter().map(|(_, v)| *v).collect();
    let job = f.crm_job(
        100,
        &format!(
            r#"type = "rest"
name = "crm"
url = "{url}/_sandbox/rest/crm"
headers = {{ {headers} }}
batch = {{ max_rows = 500 }}"#,
            url = f.sandbox.url
        ),
    );
    let (code, out) = f.run_job(&job, DAY, env);
    assert_eq!(code, 0, "output:\n{}", redacted(&out, &secrets));
    for &(name, secret) in env {
        assert!(
            !out.contains(secret),
            "the secret in {name} is in the output (shown hidden):\n{}",
            redacted(&out, &secrets)
        );
    }

    let url = format!("{}/_sandbox/rest/crm", f.sandbox.url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, text) = rt.block_on(async {
        let response = reqwest::get(url.as_str()).await.expect("GET the recorder");
        let status = response.status().as_u16();
        (
            status,
            response.text().await.expect("the recorder's answer"),
        )
    });
    assert_eq!(
        status,
        200,
        "GET {url}: {}",
        head(&redacted(&text, &secrets), 600)
    );
    for &(name, secret) in env {
        assert!(
            !text.contains(secret),
            "GET {url} shows the secret in {name} (headers shown hidden): {}",
            redacted(
                &serde_json::from_str::<Vec<Value>>(&text)
                    .ok()
                    .and_then(|r| r.first().map(|r| r["headers"].to_string()))
                    .unwrap_or_default(),
                &secrets
            )
        );
    }
    let recorded: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "GET {url} is not a JSON list of requests ({e}): {}",
            head(&redacted(&text, &secrets), 600)
        )
    });
    assert!(!recorded.is_empty(), "the recorder holds no request");
    recorded
}

/// The recorder keeps `Authorization` as a prefix of its SHA-256, so a test can tell the right
/// token arrived and nothing shows it; headers that are no secret stay as sent.
#[test]
fn the_rest_recorder_shows_an_authorization_header_only_as_a_digest_prefix() {
    let f = Fixture::new(SandboxConfig::default());
    let env = [("CRM_TOKEN", CRM_TOKEN)];
    let recorded = recorded_over_http(
        &f,
        r#"Authorization = "Bearer env:CRM_TOKEN", X-Source = "activator""#,
        &env,
    );
    let expected = recorded_form(&format!("Bearer {CRM_TOKEN}"));
    assert_eq!(
        expected.chars().count(),
        "sha256:".len() + 12 + 1,
        "{expected}"
    );
    for (i, r) in recorded.iter().enumerate() {
        let authorization = r["headers"]["authorization"].as_str();
        assert!(
            authorization == Some(expected.as_str()),
            "request {i}: authorization recorded as {:?}, expected {expected:?} (the digest \
             prefix of `Bearer <secret>`)",
            authorization.map(|a| redacted(a, &[CRM_TOKEN]))
        );
        assert_eq!(
            r["headers"]["x-source"], "activator",
            "request {i}: a literal header is recorded as sent"
        );
        assert_eq!(
            r["headers"]["content-type"], "application/json",
            "request {i}"
        );
    }
}

/// A secret header of another name (an API key) is not shown by the recorder either.
#[test]
fn the_rest_recorder_does_not_show_an_api_key_header() {
    let f = Fixture::new(SandboxConfig::default());
    let env = [("CRM_TOKEN", CRM_TOKEN), ("CRM_KEY", CRM_KEY)];
    let recorded = recorded_over_http(
        &f,
        r#"Authorization = "Bearer env:CRM_TOKEN", X-Api-Key = "env:CRM_KEY""#,
        &env,
    );
    let expected = recorded_form(CRM_KEY);
    for (i, r) in recorded.iter().enumerate() {
        let key = r["headers"]["x-api-key"].as_str();
        assert!(
            key == Some(expected.as_str()),
            "request {i}: x-api-key recorded as {:?}, expected {expected:?}",
            key.map(|k| redacted(k, &[CRM_TOKEN, CRM_KEY]))
        );
    }
}

/// An endpoint that answers more than a platform ever does is refused after 8 MiB, as a
/// permanent error, not read whole into memory: whether it announces its length (refused at
/// the header) or not (refused while reading, as a chunked or close-delimited answer is).
#[test]
fn an_answer_larger_than_8_mib_is_a_permanent_error() {
    for announced in [true, false] {
        let f = Fixture::new(SandboxConfig::default());
        generated_data(5_000, 3);
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a listener");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let huge: Handler = Arc::new(move |mut stream: TcpStream| {
            read_request(&mut stream);
            let body = vec![b'x'; 9 << 20];
            let length = if announced {
                format!("Content-Length: {}\r\n", body.len())
            } else {
                String::new()
            };
            let head = format!("HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            answer(&mut stream, &body);
        });
        let server = serve(listener, stop.clone(), huge);
        let job = f.crm_job(
            100,
            &format!(
                "type = \"rest\"\nname = \"crm\"\nurl = \"{url}/members\"\nsuccess_status = [200]"
            ),
        );
        let (code, out) = f.run_job(&job, DAY, &[]);
        stop.store(true, Ordering::SeqCst);
        server.join().unwrap();
        assert_eq!(code, 2, "announced: {announced}: {}", head(&out, 4000));
        assert!(
            out.contains("larger than 8 MiB"),
            "announced: {announced}: {}",
            head(&out, 4000)
        );
    }
}
