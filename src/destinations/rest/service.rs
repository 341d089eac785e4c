//! Reading an endpoint's answers by the job's status lists: done, retry (after `Retry-After` when
//! the endpoint sends one), or permanent. Errors and warnings give the status and the answer's
//! size, never its text: an endpoint that echoes the request would put members' values (raw
//! `external_id`s, say) on the console and in the logs.

use super::config::StatusSet;
use crate::destinations::http::{Verdict, retry_after};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

pub fn classify(
    success: &StatusSet,
    retry: &StatusSet,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Verdict<()> {
    let code = status.as_u16();
    if success.contains(code) {
        return Verdict::Done(());
    }
    let why = format!(
        "HTTP {code} (its answer, {} bytes, is not shown: it may echo members)",
        body.len()
    );
    if retry.contains(code) {
        Verdict::Retry {
            after: retry_after(headers),
            why,
        }
    } else {
        Verdict::Fail(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statuses_and_retry_after() {
        let success = StatusSet(vec![(200, 299)]);
        let retry = StatusSet(vec![(429, 429), (500, 599)]);
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        let v = |s: u16, h: &HeaderMap| {
            classify(
                &success,
                &retry,
                StatusCode::from_u16(s).unwrap(),
                h,
                b"{\"error\": \"no\"}",
            )
        };
        assert!(matches!(v(204, &h), Verdict::Done(())));
        match v(429, &h) {
            Verdict::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(2))),
            other => panic!("{other:?}"),
        }
        match v(422, &HeaderMap::new()) {
            Verdict::Fail(m) => assert!(m.contains("422") && !m.contains("no\""), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
