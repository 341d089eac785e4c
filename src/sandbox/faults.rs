//! Fault injection shared by every emulated platform: transient errors, throttling, latency,
//! dropped connections and invalid rows, set by flags for the whole sandbox, per request by
//! the `X-Sandbox-Fault` header (`error`, `throttle`, `drop`, `slow`), or aimed once at the next
//! request of a method and path (`FaultConfig::once`, which sets that header on its way in).
//!
//! A "dropped connection" is the nastiest case for a client: the platform applies the request,
//! then the response never arrives. The sandbox applies the request and then aborts the
//! connection, so a client that retries must not cause the batch to count twice.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// Shares of requests that fail, each in [0, 1].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Transient server errors (HTTP 5xx, or the platform's transient error code).
    pub error_rate: f64,
    /// Throttling answers (HTTP 429, Meta's 80003).
    pub throttle_rate: f64,
    /// Requests applied whose connection is then dropped before the response.
    pub drop_rate: f64,
    /// Extra latency per request, in milliseconds.
    pub latency_ms: u64,
    /// Share of rows answered as invalid entries (Meta) or invalid format (Google).
    pub invalid_row_rate: f64,
    /// Seed of the fault dice, so a test run is repeatable.
    pub seed: u64,
    /// Faults aimed at particular requests, each spent on the first request it matches: how a
    /// test loses the answer to one audience creation and nothing else.
    pub once: Vec<TargetedFault>,
}

/// A fault for the next request of a method whose path ends a given way.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetedFault {
    pub fault: FaultName,
    /// `POST`, `GET`, ...; any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// The end of the request's path: `/customaudiences`, `/userLists`.
    pub path_ends_with: String,
}

/// The faults a request can ask for by name, as in the `X-Sandbox-Fault` header.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FaultName {
    Error,
    Throttle,
    Drop,
    Slow,
}

impl FaultName {
    pub fn header(self) -> &'static str {
        match self {
            FaultName::Error => "error",
            FaultName::Throttle => "throttle",
            FaultName::Drop => "drop",
            FaultName::Slow => "slow",
        }
    }
}

/// What to do to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Error,
    Throttle,
    Drop,
}

/// The dice: a small xorshift generator behind a mutex.
pub struct Faults {
    pub config: Mutex<FaultConfig>,
    state: Mutex<u64>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Faults {
        let seed = config.seed.max(1);
        Faults {
            config: Mutex::new(config),
            state: Mutex::new(seed),
        }
    }

    pub fn set(&self, config: FaultConfig) {
        *self.state.lock().unwrap() = config.seed.max(1);
        *self.config.lock().unwrap() = config;
    }

    /// The targeted fault this request meets, if any, as its header value; spent once taken.
    pub fn take_targeted(&self, method: &str, path: &str) -> Option<&'static str> {
        let mut config = self.config.lock().unwrap();
        let i = config.once.iter().position(|t| {
            t.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path.ends_with(&t.path_ends_with)
        })?;
        Some(config.once.remove(i).fault.header())
    }

    /// A uniform number in [0, 1).
    pub fn roll(&self) -> f64 {
        let mut s = self.state.lock().unwrap();
        let mut x = *s;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *s = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decides the fate of a request; `header` is its `X-Sandbox-Fault` value, if any.
    pub async fn decide(&self, header: Option<&str>) -> Fault {
        let config = self.config.lock().unwrap().clone();
        let slow = header == Some("slow");
        if config.latency_ms > 0 || slow {
            let ms = if slow { 2000 } else { config.latency_ms };
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match header {
            Some("error") => return Fault::Error,
            Some("throttle") => return Fault::Throttle,
            Some("drop") => return Fault::Drop,
            _ => {}
        }
        let r = self.roll();
        if r < config.error_rate {
            Fault::Error
        } else if r < config.error_rate + config.throttle_rate {
            Fault::Throttle
        } else if r < config.error_rate + config.throttle_rate + config.drop_rate {
            Fault::Drop
        } else {
            Fault::None
        }
    }

    /// Draws, row by row, whether a row is to be answered as invalid (the rate read once, not
    /// per row of a 10,000-row request).
    pub fn invalid_rows(&self) -> impl FnMut() -> bool + '_ {
        let rate = self.config.lock().unwrap().invalid_row_rate;
        move || rate > 0.0 && self.roll() < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targeted_fault_meets_the_first_matching_request_once() {
        let faults = Faults::new(FaultConfig {
            once: vec![TargetedFault {
                fault: FaultName::Drop,
                method: Some("POST".into()),
                path_ends_with: "/customaudiences".into(),
            }],
            ..FaultConfig::default()
        });
        assert_eq!(
            faults.take_targeted("GET", "/v25.0/act_1/customaudiences"),
            None
        );
        assert_eq!(faults.take_targeted("POST", "/v25.0/123/users"), None);
        assert_eq!(
            faults.take_targeted("post", "/v25.0/act_1/customaudiences"),
            Some("drop")
        );
        assert_eq!(
            faults.take_targeted("POST", "/v25.0/act_1/customaudiences"),
            None
        );
        let parsed: FaultConfig = serde_json::from_str(
            r#"{"once": [{"fault": "throttle", "path_ends_with": "/userLists"}]}"#,
        )
        .unwrap();
        assert_eq!(parsed.once[0].fault, FaultName::Throttle);
        assert_eq!(parsed.once[0].method, None);
    }
}
