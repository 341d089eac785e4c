//! The delivery machinery every HTTP destination shares: one client, a request-rate limiter,
//! retries with exponential backoff and full jitter, and counters for the run report.
//!
//! A destination supplies two things: how to build its request, and how to read the answer
//! (`Verdict`): done, retry (perhaps after a delay the platform named), or fail for good. What
//! is transient and what is permanent is the platform's word, so classification lives with each
//! destination; how to wait and how often to try lives here, once.
//!
//! Requests carry tokens (in headers, and Meta's in the body), so what leaves is checked here for
//! every request, not only when the job is loaded: HTTPS, or plain HTTP to loopback only; a
//! redirect is followed only to the same scheme, host and port (reqwest would follow one to any
//! host and strip only `Authorization`, sending TikTok's `Access-Token`, a REST destination's
//! secret headers and a re-sent body along), and any other is a permanent error naming the host
//! it pointed to. Answers are read up to `MAX_ANSWER_BYTES`: a platform's answer is small, and
//! an endpoint that answers gigabytes must not take the run's memory.

use crate::error::{Error, Result};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What an answer means.
#[derive(Debug)]
pub enum Verdict<T> {
    Done(T),
    /// Transient: try again, after `after` if the platform said how long.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Permanent: the message says what the platform objected to.
    Fail(String),
}

impl<T> Verdict<T> {
    /// The same verdict with the done value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Verdict<U> {
        match self {
            Verdict::Done(v) => Verdict::Done(f(v)),
            Verdict::Retry { after, why } => Verdict::Retry { after, why },
            Verdict::Fail(why) => Verdict::Fail(why),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest wait a platform's own hint may impose before one retry.
    pub max_hinted_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_hinted_wait: Duration::from_secs(300),
        }
    }
}

/// Spaces requests evenly at a fixed rate (a platform's published limit), less `RATE_MARGIN`.
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

/// How far under its published rate a platform is paced. At exactly the rate, a request sent a
/// few milliseconds late (a busy scheduler) puts the one a second after it inside the same
/// rolling second, and the platform refuses it: Microsoft's emulator at 5 requests a second
/// refused 4 of 30 and the run reached 81% of the rate; 2% under it leaves 20 ms of slack a
/// second.
pub const RATE_MARGIN: f64 = 0.02;

impl RateLimiter {
    pub fn per_second(rate: f64) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / (rate.max(1e-6) * (1.0 - RATE_MARGIN))),
            next: Mutex::new(Instant::now()),
        }
    }

    pub async fn acquire(&self) {
        let wait = {
            let mut next = self.next.lock().unwrap();
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Counters of one destination's requests.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

impl Counters {
    /// Puts the requests and retries into the destination's report.
    pub fn count_in(&self, report: &mut crate::destinations::SinkReport) {
        report.requests = self.requests.load(Ordering::Relaxed);
        report.retries = self.retries.load(Ordering::Relaxed);
    }
}

/// The most of an answer that is read: platform answers are kilobytes.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// A redirect refused: to another scheme, host or port, or too many.
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// Follows a redirect only to the same scheme, host and port, at most five times.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let target = attempt.url();
        let host = origin(target);
        let same_origin = attempt.previous().last().is_some_and(|from| {
            from.scheme() == target.scheme()
                && from.host_str() == target.host_str()
                && from.port_or_known_default() == target.port_or_known_default()
        });
        if !same_origin {
            let why = format!(
                "the platform redirected the request to {host}; activator follows redirects only within the same host, port and scheme (its token would go along): check the destination's base_url or url"
            );
            attempt.error(RedirectRefused(why))
        } else if attempt.previous().len() > 5 {
            attempt.error(RedirectRefused(format!(
                "more than five redirects within {host}: check the destination's base_url or url"
            )))
        } else {
            attempt.follow()
        }
    })
}

/// The refused redirect behind a request error, if that is what it is.
fn refused_redirect(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<RedirectRefused>() {
            return Some(r.0.clone());
        }
        source = s.source();
    }
    None
}

/// Reads an answer's body, at most `MAX_ANSWER_BYTES`; else what that means: an answer too
/// large is permanent, one cut off is worth a retry (the request may have been applied).
async fn read_capped<T>(
    mut response: reqwest::Response,
) -> std::result::Result<Vec<u8>, Verdict<T>> {
    let too_large = || {
        Verdict::Fail(format!(
            "the answer is larger than {} MiB, which no platform answer is: check the destination's base_url or url",
            MAX_ANSWER_BYTES >> 20
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_ANSWER_BYTES => {
                return Err(too_large());
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Verdict::Retry {
                    after: None,
                    why: format!("reading the answer: {}", without_url(&e)),
                });
            }
        }
    }
}

/// An HTTP client with retries and an optional rate limit.
pub struct Service {
    pub client: reqwest::Client,
    pub policy: RetryPolicy,
    pub limiter: Option<RateLimiter>,
    pub counters: Counters,
    /// Names the destination in errors.
    pub name: String,
}

impl Service {
    pub fn new(
        name: &str,
        policy: RetryPolicy,
        requests_per_second: Option<f64>,
    ) -> Result<Service> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("activator/", env!("CARGO_PKG_VERSION")))
            .redirect(redirect_policy())
            .build()
            .map_err(|e| Error::internal(format!("{name}: HTTP client: {e}")))?;
        Ok(Service {
            client,
            policy,
            limiter: requests_per_second.map(RateLimiter::per_second),
            counters: Counters::default(),
            name: name.to_string(),
        })
    }

    /// Sends the request `build` makes until `classify` says done or fail, or attempts run out.
    /// `what` names the call in errors (`upload batch 3`); it never holds identifiers.
    pub async fn call<T>(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        classify: impl Fn(StatusCode, &HeaderMap, &[u8]) -> Verdict<T>,
    ) -> Result<T> {
        let _in_flight = crate::shutdown::InFlight::enter();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if crate::shutdown::requested() {
                return Err(crate::shutdown::stopped(&format!("{}: {what}", self.name)));
            }
            let verdict = self.attempt(&build, &classify).await;
            if let Some(v) = self.settle(what, attempt, verdict).await? {
                return Ok(v);
            }
        }
    }

    /// Finds a named object (an audience) or creates it, and never creates it twice. Creating is
    /// not idempotent: a create whose answer was lost (a dropped connection, a timeout, a server
    /// error after the fact) may have been applied, so each new try looks the object up first.
    pub async fn find_or_create<T, Found: std::future::Future<Output = Result<Option<T>>>>(
        &self,
        what: &str,
        find: impl Fn() -> Found,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        classify: impl Fn(StatusCode, &HeaderMap, &[u8]) -> Verdict<T>,
    ) -> Result<T> {
        let _in_flight = crate::shutdown::InFlight::enter();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if crate::shutdown::requested() {
                return Err(crate::shutdown::stopped(&format!("{}: {what}", self.name)));
            }
            if let Some(found) = find().await? {
                return Ok(found);
            }
            let verdict = self.attempt(&build, &classify).await;
            if let Some(v) = self.settle(what, attempt, verdict).await? {
                return Ok(v);
            }
        }
    }

    /// One request and what its answer means; a transport failure is worth a retry.
    async fn attempt<T>(
        &self,
        build: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        classify: &impl Fn(StatusCode, &HeaderMap, &[u8]) -> Verdict<T>,
    ) -> Verdict<T> {
        if let Some(l) = &self.limiter {
            tokio::select! {
                _ = l.acquire() => {}
                _ = crate::shutdown::wait() => {}
            }
        }
        // SIGTERM came while this request waited its turn: it is not sent (see `settle`).
        if crate::shutdown::requested() {
            return Verdict::Retry {
                after: None,
                why: "not sent: stopping on SIGTERM".into(),
            };
        }
        let request = match build(&self.client).build() {
            Ok(r) => r,
            Err(e) => {
                return Verdict::Fail(format!("cannot build the request: {}", without_url(&e)));
            }
        };
        // Every request, not only the job's base URL: a URL an answer handed back (a next page,
        // an upload location) is checked too.
        // Named by its origin only: the path and query may carry a token.
        if super::check_base_url(request.url().as_str()).is_err() {
            return Verdict::Fail(format!(
                "refused to send to {}: use https:// (plain http only to loopback)",
                origin(request.url())
            ));
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match self.client.execute(request).await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                match read_capped(response).await {
                    Ok(body) => classify(status, &headers, &body),
                    Err(verdict) => verdict,
                }
            }
            Err(e) => match refused_redirect(&e) {
                Some(why) => Verdict::Fail(why),
                None => Verdict::Retry {
                    after: None,
                    why: without_url(&e),
                },
            },
        }
    }

    /// `Some` when done; `None` after waiting out a retryable answer; an error when the answer
    /// is permanent or the attempts are spent.
    async fn settle<T>(&self, what: &str, attempt: u32, verdict: Verdict<T>) -> Result<Option<T>> {
        match verdict {
            Verdict::Done(v) => Ok(Some(v)),
            Verdict::Fail(why) => Err(Error::config(format!(
                "{}: {what}: the platform refused it: {why}",
                self.name
            ))),
            Verdict::Retry { .. } if crate::shutdown::requested() => {
                Err(crate::shutdown::stopped(&format!("{}: {what}", self.name)))
            }
            Verdict::Retry { after, why } => {
                if attempt >= self.policy.max_attempts {
                    return Err(Error::transient(format!(
                        "{}: {what}: gave up after {attempt} attempts; last: {why}",
                        self.name
                    )));
                }
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                let wait = self.backoff(attempt, after);
                tracing::warn!(destination = %self.name, what, attempt, wait_ms = wait.as_millis() as u64, reason = %why, "retrying");
                // A stop asked for ends the wait; the next attempt then stops the call.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = crate::shutdown::wait() => {}
                }
                Ok(None)
            }
        }
    }

    /// Full jitter: uniform in [0, min(max, initial * 2^(attempt-1))], at least the hint.
    fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let cap = self
            .policy
            .initial_backoff
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.policy.max_backoff);
        let jittered = cap.mul_f64(jitter());
        match hint {
            Some(h) => h.min(self.policy.max_hinted_wait).max(jittered),
            None => jittered,
        }
    }
}

/// A uniform number in [0, 1) from the clock and a counter; good enough to spread retries.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = foldhash::fast::RandomState::default().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A transport error's text without its URL, which may carry query parameters.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection broke during the answer"
    } else {
        "request failed"
    };
    let source = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    format!("{kind}{source}")
}

/// Parses a `Retry-After` header given in seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Masks a sample value for a report: its length only. A hash of it, even a prefix, is not
/// shown: for values of few possibilities (a phone number) a dictionary reverses it.
pub fn mask(value: &str) -> String {
    format!("({} chars, not shown)", value.chars().count())
}

/// The most of a platform's message that is shown.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// A run of this many hex digits (decimal digits among them) could be a member's value.
const VALUE_RUN: usize = 16;

/// A platform's error message as it may be shown in an error or a log, or `None` (say "message
/// withheld") when it could quote a member's value: it has an `@` (an e-mail), or a run of 16
/// or more hex digits, which takes in runs of 16 or more decimal digits (a hash, a phone, an
/// id). A `-` does not break a run, so a mobile ad id quoted as a UUID (`8-4-4-4-12` hex
/// digits, which LinkedIn receives raw) is withheld too. The whole text is checked, and what
/// is shown is cut at `MAX_MESSAGE_CHARS`.
pub fn platform_message(text: &str) -> Option<String> {
    let mut run = 0usize;
    for c in text.chars() {
        if c == '@' {
            return None;
        }
        if c.is_ascii_hexdigit() {
            run += 1;
            if run >= VALUE_RUN {
                return None;
            }
        } else if c != '-' {
            run = 0;
        }
    }
    Some(text.chars().take(MAX_MESSAGE_CHARS).collect())
}

/// `scheme://host:port` of a URL: where a request goes, without its path and query.
fn origin(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("(no host)");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_names_the_origin_without_path_or_query() {
        let url = url::Url::parse("http://10.0.0.7:8080/v1/upload?access_token=t0k3n").unwrap();
        assert_eq!(super::origin(&url), "http://10.0.0.7:8080");
        let url = url::Url::parse("https://graph.example.com/x?key=k").unwrap();
        assert_eq!(super::origin(&url), "https://graph.example.com");
    }

    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_hints() {
        let s = Service::new("t", RetryPolicy::default(), None).unwrap();
        for attempt in 1..20 {
            let b = s.backoff(attempt, None);
            assert!(b <= Duration::from_secs(30));
        }
        assert!(s.backoff(1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        assert_eq!(
            s.backoff(1, Some(Duration::from_secs(10_000))),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn platform_messages_that_could_quote_a_value_are_withheld() {
        assert_eq!(
            platform_message("Invalid CustomerList Id 821").as_deref(),
            Some("Invalid CustomerList Id 821")
        );
        // An e-mail, a hash, a long number, a mobile ad id as a UUID (upper or lower case).
        assert_eq!(platform_message("bad item a@example.com"), None);
        assert_eq!(platform_message("@"), None);
        let hash = "ab".repeat(32);
        assert_eq!(platform_message(&format!("item {hash} refused")), None);
        assert_eq!(platform_message("phone 4915112345678901 refused"), None);
        assert_eq!(
            platform_message("idValue 6d92078a-8246-4ba4-ae5b-76104861e7dc is not valid"),
            None
        );
        assert_eq!(
            platform_message("IDFA 6D92078A-8246-4BA4-AE5B-76104861E7DC"),
            None
        );
        // Fifteen hex digits are shown; a date or a short code is not a value.
        let fifteen = "0123456789abcde";
        assert_eq!(
            platform_message(&format!("x {fifteen} y")),
            Some(format!("x {fifteen} y"))
        );
        assert!(platform_message("since 2026-11-25, code 65602").is_some());
        // Checked over the whole text, cut after: a value past the cut still withholds it.
        let long = format!("{} {hash}", "x".repeat(400));
        assert_eq!(platform_message(&long), None);
        let long = "é".repeat(400);
        assert_eq!(
            platform_message(&long).map(|m| m.chars().count()),
            Some(MAX_MESSAGE_CHARS)
        );
    }

    #[test]
    fn masks_samples() {
        let m = mask("EXT-7");
        assert_eq!(m, "(5 chars, not shown)");
    }
}
