//! What the sandbox keeps: audiences and their members, per platform, and counters, so a test
//! can ask exactly who is in each audience and what the sandbox saw; and the rolling call
//! window rate-limited platforms throttle with.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// Members by the 128-bit digest of their canonical JSON: the JSON and when the member was last
/// added. Keyed by digest because hashing 400-byte members again on every lookup and every
/// growth of the table was a good part of an upload's time.
pub type MemberMap = HashMap<u128, (String, i64), foldhash::fast::RandomState>;

/// The digest of a canonical member: two seeded 64-bit hashes, so that two different members
/// of even billions collide with negligible chance.
fn digest(member: &str) -> u128 {
    use std::hash::BuildHasher;
    const LOW: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0x5eed);
    const HIGH: foldhash::quality::FixedState =
        foldhash::quality::FixedState::with_seed(0x9e37_79b9_7f4a_7c15);
    ((HIGH.hash_one(member) as u128) << 64) | LOW.hash_one(member) as u128
}

/// One audience (Meta custom audience, Google user list).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Audience {
    pub id: String,
    pub platform: String,
    pub account: String,
    pub name: String,
    /// Members as canonical JSON objects of their identifiers (`{"EMAIL": "...", ...}`), each
    /// with when it was last added (microseconds since the epoch), for Google's `removeAll` as
    /// of a time. A hash map, not a sorted set: uploads of millions of members insert in
    /// constant time, and only a listing sorts.
    #[serde(skip)]
    pub members: MemberMap,
    pub size: usize,
}

impl Audience {
    fn summary(&self) -> Audience {
        Audience {
            id: self.id.clone(),
            platform: self.platform.clone(),
            account: self.account.clone(),
            name: self.name.clone(),
            members: MemberMap::default(),
            size: self.size,
        }
    }
}

/// Counters a test reads through `GET /_sandbox/stats`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Every request the platform routes saw.
    pub requests: u64,
    /// Requests that carried members (add, remove, replace).
    pub upload_requests: u64,
    /// Upload requests applied (not faulted, not rejected).
    pub batches_accepted: u64,
    /// A batch with the same members applied to the same audience again, in another session or
    /// without one: a client that sent it twice (a nightly full `add` does so by design).
    pub batches_accepted_twice: u64,
    /// A session's batch (same sequence number) received again: acknowledged, not applied again,
    /// as Meta lets a session repeat a batch.
    pub batches_repeated: u64,
    pub injected_errors: u64,
    pub injected_throttles: u64,
    pub injected_drops: u64,
    pub rate_limited: u64,
    pub rejected: u64,
    pub sessions: u64,
    /// The largest number of rows (members) seen in one request: identifiers for Snap, lines
    /// of one file for TikTok.
    pub max_rows_per_request: u64,
    /// The largest request body (TikTok: file) seen, in bytes.
    pub max_bytes_per_request: u64,
    /// The most files one TikTok create or update call named.
    pub max_files_per_request: u64,
    /// TikTok files uploaded (signature checked against the file's MD5).
    pub files_uploaded: u64,
    /// TikTok uploads whose `file_signature` was not the file's MD5.
    pub signature_mismatches: u64,
}

/// A member of a platform that matches each identifier on its own (TikTok, Snap), as the
/// store keeps it: `{"EMAIL_SHA256":"<hash>"}`.
pub fn single_key_member(key: &str, value: &str) -> String {
    serde_json::json!({ key: value }).to_string()
}

/// Calls in a rolling window, for platforms that throttle by request rate.
#[derive(Default)]
pub struct CallWindow {
    calls: Mutex<std::collections::VecDeque<std::time::Instant>>,
}

impl CallWindow {
    /// Counts a call unless `budget` calls were made within `window` already.
    pub fn admit(&self, budget: Option<u64>, window: std::time::Duration) -> bool {
        let Some(budget) = budget else {
            return true;
        };
        let now = std::time::Instant::now();
        let mut calls = self.calls.lock().unwrap();
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            calls.pop_front();
        }
        if calls.len() as u64 >= budget {
            return false;
        }
        calls.push_back(now);
        true
    }
}

#[derive(Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    audiences: BTreeMap<String, Audience>,
    stats: Stats,
    /// Applied batches: (audience, session, batch) -> times.
    batches: HashMap<(String, String, u64), u64>,
    /// Fingerprints of applied batches' contents (audience, add, members): the wrapping sum of
    /// the members' digests, which does not depend on their order.
    contents: std::collections::HashSet<(String, bool, u128)>,
}

impl Store {
    pub fn with<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        f(&mut self.inner.lock().unwrap().stats)
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().unwrap().stats.clone()
    }

    pub fn reset(&self) {
        *self.inner.lock().unwrap() = Inner::default();
    }

    pub fn create(&self, platform: &str, account: &str, name: &str) -> Audience {
        let mut inner = self.inner.lock().unwrap();
        inner.next_id += 1;
        let id = format!("{}", 23_800_000_000_000 + inner.next_id);
        let audience = Audience {
            id: id.clone(),
            platform: platform.into(),
            account: account.into(),
            name: name.into(),
            ..Audience::default()
        };
        inner.audiences.insert(id, audience.clone());
        audience
    }

    /// The audience without its members (a copy of millions of them on every request made
    /// large uploads quadratic); `members` reads those.
    pub fn get(&self, id: &str) -> Option<Audience> {
        self.inner
            .lock()
            .unwrap()
            .audiences
            .get(id)
            .map(Audience::summary)
    }

    pub fn list(&self) -> Vec<Audience> {
        self.inner
            .lock()
            .unwrap()
            .audiences
            .values()
            .map(Audience::summary)
            .collect()
    }

    pub fn members(&self, id: &str) -> Option<Vec<serde_json::Value>> {
        let inner = self.inner.lock().unwrap();
        let a = inner.audiences.get(id)?;
        let mut sorted: Vec<&String> = a.members.values().map(|(m, _)| m).collect();
        sorted.sort_unstable();
        Some(
            sorted
                .into_iter()
                .map(|m| serde_json::from_str(m).unwrap_or_default())
                .collect(),
        )
    }

    /// Applies a batch of members. `batch` identifies it (session and sequence number): a repeat
    /// is acknowledged and counted, not applied again. A batch whose members were applied before
    /// under another identity counts as accepted twice.
    pub fn apply(
        &self,
        id: &str,
        batch: Option<(String, u64)>,
        add: bool,
        members: Vec<String>,
        replace: bool,
    ) {
        // Digests before the lock: requests apply one at a time, but hash in parallel.
        let digests: Vec<u128> = members.iter().map(|m| digest(m)).collect();
        let mut inner = self.inner.lock().unwrap();
        if let Some((session, seq)) = batch {
            let times = inner
                .batches
                .entry((id.to_string(), session, seq))
                .or_default();
            *times += 1;
            if *times > 1 {
                inner.stats.batches_repeated += 1;
                return;
            }
        }
        if !members.is_empty() {
            if !inner.contents.insert((
                id.to_string(),
                add,
                digests.iter().fold(0, |a, d| a.wrapping_add(*d)),
            )) {
                inner.stats.batches_accepted_twice += 1;
            }
        }
        inner.stats.batches_accepted += 1;
        let Some(a) = inner.audiences.get_mut(id) else {
            return;
        };
        if replace {
            a.members.clear();
        }
        let now = chrono::Utc::now().timestamp_micros();
        if add {
            a.members.reserve(members.len());
        }
        for (m, d) in members.into_iter().zip(digests) {
            if add {
                a.members.insert(d, (m, now));
            } else {
                a.members.remove(&d);
            }
        }
        a.size = a.members.len();
    }

    /// Removes the members last added before `as_of` (all of them without a time).
    pub fn remove_added_before(&self, id: &str, as_of: Option<chrono::DateTime<chrono::Utc>>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(a) = inner.audiences.get_mut(id) {
            let cutoff = as_of.map(|t| t.timestamp_micros()).unwrap_or(i64::MAX);
            a.members.retain(|_, (_, added)| *added >= cutoff);
            a.size = a.members.len();
        }
    }

    /// Replaces an audience's members wholesale (end of a replace session).
    pub fn set_members(&self, id: &str, members: impl IntoIterator<Item = String>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(a) = inner.audiences.get_mut(id) {
            let now = chrono::Utc::now().timestamp_micros();
            a.members = members
                .into_iter()
                .map(|m| (digest(&m), (m, now)))
                .collect();
            a.size = a.members.len();
        }
    }

    pub fn members_set(&self, id: &str) -> BTreeSet<String> {
        self.inner
            .lock()
            .unwrap()
            .audiences
            .get(id)
            .map(|a| a.members.values().map(|(m, _)| m.clone()).collect())
            .unwrap_or_default()
    }
}
