//! What the sandbox keeps: audiences and their members, per platform, and counters, so a test
//! can ask exactly who is in each audience and what the sandbox saw; and the rolling call
//! window rate-limited platforms throttle with.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use super::member_index::MemberIndex;

/// An audience's members: canonical JSON texts in their packed form (`pack`), each with when it
/// was last added (microseconds since the epoch, for Google's `removeAll` as of a time). The
/// members lie end to end in one buffer, each one's place and time in a list of slots in the
/// order they came, and an index finds a member's slot by its hash (`member_index`): a
/// 5-million-member upload then costs one hash and one copy per member, where a map of
/// `String`s cost an allocation each, page faults, and hashing 400-byte members again whenever
/// the table grew. A removed member's bytes and slot stay until the audience is cleared.
#[derive(Clone, Default)]
pub struct MemberSet {
    texts: Vec<u8>,
    slots: Vec<Slot>,
    index: MemberIndex,
}

#[derive(Clone, Copy)]
struct Slot {
    start: usize,
    len: u32,
    added: i64,
}

/// How many members ahead `Store::apply` asks for a member's place in the index.
const PREFETCH_AHEAD: usize = 8;

impl std::fmt::Debug for MemberSet {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "MemberSet({} members)", self.len())
    }
}

/// Marks a packed hash: the 32 bytes that follow stand for `"` + their 64 lowercase hex digits
/// + `"`. JSON text never holds the byte 0x01 (control characters are escaped in strings).
const PACKED_HEX: u8 = 0x01;

/// Object keys the emulators' members use, each packed as one byte: `PACKED_KEY` + its index.
/// A member is mostly hashes and these keys: with both packed, a Meta member of six hashes
/// takes about 210 bytes rather than 270, which an audience of 5 million feels in page faults.
const PACKED_KEYS: [&str; 21] = [
    "COUNTRY",
    "CT",
    "DOBD",
    "DOBM",
    "DOBY",
    "EMAIL",
    "EXTERN_ID",
    "FI",
    "FN",
    "GEN",
    "LN",
    "MADID",
    "PHONE",
    "ST",
    "ZIP",
    "emailAddress",
    "familyName",
    "givenName",
    "phoneNumber",
    "postalCode",
    "regionCode",
];

/// Marks a packed key: the byte `PACKED_KEY + i` stands for `"` + `PACKED_KEYS[i]` + `":`.
/// (Bytes below 0x20 never appear raw in JSON text.)
const PACKED_KEY: u8 = 0x02;
const _: () = assert!(PACKED_KEY as usize + PACKED_KEYS.len() <= 0x20);

/// An object key as members keep it, `"key":` packed if it is one of `PACKED_KEYS`. Emulators
/// writing members straight from a request take their keys' forms from this once per request.
pub fn packed_key(key: &str) -> Vec<u8> {
    match PACKED_KEYS.iter().position(|k| *k == key) {
        Some(i) => vec![PACKED_KEY + i as u8],
        None => {
            // As `pack` would pack it, even a key that looks like a hash.
            let mut out = vec![];
            push_member_value(&mut out, key);
            out.push(b':');
            out
        }
    }
}

/// The key `"…":` that starts `bytes` if it is one of `PACKED_KEYS`, and its length.
fn known_key(bytes: &[u8]) -> Option<(u8, usize)> {
    let end = 1 + bytes.get(1..)?.iter().position(|&b| b == b'"')?;
    if bytes.get(end + 1) != Some(&b':') {
        return None;
    }
    let name = &bytes[1..end];
    let i = PACKED_KEYS.iter().position(|k| k.as_bytes() == name)?;
    Some((PACKED_KEY + i as u8, end + 2))
}

/// Appends a member's identifier value as the store keeps it: a SHA-256 in lowercase hex as
/// `PACKED_HEX` and its 32 bytes, anything else as a JSON string. Members are mostly such
/// hashes: packed, an audience of 5 million takes about half the memory (and page faults) of
/// its JSON text, and a member is unpacked only when a test asks who is in the audience.
pub fn push_member_value(out: &mut Vec<u8>, v: &str) {
    if !push_packed_hash(out, v) {
        crate::json::push_string(out, v);
    }
}

/// Appends `v` packed (`PACKED_HEX` and 32 bytes) if it is a SHA-256 in lowercase hex; false,
/// with nothing written, if it is not. An emulator that requires hashes checks them with this,
/// so each value is read once, to check and decode it together.
pub fn push_packed_hash(out: &mut Vec<u8>, v: &str) -> bool {
    match packed_hex(v.as_bytes()) {
        Some(digest) => {
            push_packed_digest(out, &digest);
            true
        }
        None => false,
    }
}

/// Appends a SHA-256 given as its 32 bytes, as `push_member_value` packs its lowercase hex.
pub fn push_packed_digest(out: &mut Vec<u8>, digest: &[u8; 32]) {
    out.push(PACKED_HEX);
    out.extend_from_slice(digest);
}

/// The 32 bytes of a SHA-256 in lowercase hex, checked and decoded in one pass (`hash.rs`). (A
/// digit at a time, this was most of the sandbox's CPU in a large upload.)
pub(super) fn packed_hex(v: &[u8]) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    crate::identity::hash::decode_lowercase_hex(v, &mut digest).then_some(digest)
}

/// A canonical JSON text in its packed form: each string that is a SHA-256 in lowercase hex
/// packed as `push_member_value` packs it, each key of `PACKED_KEYS` as `packed_key` packs it.
pub fn pack(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // A quote, 64 hex digits and a quote is a whole string: after a string's closing quote
        // JSON has `:`, `,`, `]` or `}`, and a quote inside a string is escaped.
        if bytes[i] == b'"'
            && bytes.get(i + 65) == Some(&b'"')
            && let Some(digest) = packed_hex(&bytes[i + 1..i + 65])
        {
            out.push(PACKED_HEX);
            out.extend_from_slice(&digest);
            i += 66;
        } else if bytes[i] == b'"'
            && (i == 0 || matches!(bytes[i - 1], b'{' | b','))
            && let Some((token, len)) = known_key(&bytes[i..])
        {
            // A string that follows `{` or `,` and is followed by `:` is a key (a quote inside
            // a string is escaped, so follows a backslash).
            out.push(token);
            i += len;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
}

/// The canonical JSON text of a packed member.
pub fn unpack(packed: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(packed.len() * 2);
    let mut i = 0;
    while i < packed.len() {
        if packed[i] == PACKED_HEX && i + 33 <= packed.len() {
            out.push(b'"');
            for b in &packed[i + 1..i + 33] {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            out.push(b'"');
            i += 33;
        } else if let Some(key) = packed[i]
            .checked_sub(PACKED_KEY)
            .and_then(|k| PACKED_KEYS.get(usize::from(k)))
        {
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            i += 1;
        } else {
            out.push(packed[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

impl MemberSet {
    /// A packed member's hash (also what batch fingerprints add up).
    pub fn hash(member: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        const STATE: foldhash::quality::FixedState =
            foldhash::quality::FixedState::with_seed(0x5eed);
        STATE.hash_one(member)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the set; its memory stays, for the members that come next.
    pub fn clear(&mut self) {
        self.texts.clear();
        self.slots.clear();
        self.index.clear();
    }

    /// The bytes the set holds, in use or not.
    fn allocated(&self) -> usize {
        self.texts.capacity()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.index.allocated()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
        self.slots.reserve(additional);
    }

    /// Brings where the member of hash `hash` would be looked up into the cache: a caller with
    /// members to insert or remove asks this some members ahead (`Store::apply`).
    fn prefetch(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    fn text<'a>(texts: &'a [u8], slots: &[Slot], slot: u32) -> &'a [u8] {
        let slot = &slots[slot as usize];
        &texts[slot.start..slot.start + slot.len as usize]
    }

    /// Adds a packed member whose hash is `hash`, or sets when it was added if it is in already.
    pub fn insert(&mut self, member: &[u8], hash: u64, added: i64) {
        let new = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let (texts, slots) = (&self.texts, &self.slots);
        let same = |slot: u32| Self::text(texts, slots, slot) == member;
        match self.index.find_or_insert(hash, same, new) {
            Some(slot) => self.slots[slot as usize].added = added,
            None => {
                self.slots.push(Slot {
                    start: self.texts.len(),
                    len: member.len() as u32,
                    added,
                });
                self.texts.extend_from_slice(member);
            }
        }
    }

    pub fn remove(&mut self, member: &[u8], hash: u64) {
        let (texts, slots) = (&self.texts, &self.slots);
        let same = |slot: u32| Self::text(texts, slots, slot) == member;
        self.index.remove(hash, same);
    }

    /// Keeps the members added at or after `cutoff`.
    pub fn retain_added_since(&mut self, cutoff: i64) {
        let slots = &self.slots;
        self.index
            .retain(|slot| slots[slot as usize].added >= cutoff);
    }

    /// The members as canonical JSON texts.
    pub fn iter(&self) -> impl Iterator<Item = String> {
        self.index
            .slots()
            .map(|slot| unpack(Self::text(&self.texts, &self.slots, slot)))
    }
}

/// The members of one request, as an emulator builds them: packed members end to end in one
/// buffer, so a 10,000-row request costs two growing buffers rather than a `String` per member.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberBatch {
    texts: Vec<u8>,
    ends: Vec<usize>,
}

impl MemberBatch {
    /// Room for `members` members of `bytes` bytes in all.
    pub fn with_capacity(members: usize, bytes: usize) -> MemberBatch {
        MemberBatch {
            texts: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(members),
        }
    }

    /// Appends a member written by `write` in its packed form (compact JSON, keys through
    /// `packed_key`, values through `push_member_value` or `push_packed_hash`: as `pack` would
    /// pack its text), which returns false (or writes nothing) to leave it out; whatever it
    /// wrote is then taken back. Returns whether the member was kept.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let start = self.texts.len();
        if write(&mut self.texts) && self.texts.len() > start {
            self.ends.push(self.texts.len());
            true
        } else {
            self.texts.truncate(start);
            false
        }
    }

    /// Appends a member given as canonical JSON text.
    pub fn push(&mut self, member: &str) {
        self.push_with(|out| {
            pack(member, out);
            true
        });
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends the members of `other`.
    pub fn append(&mut self, other: &MemberBatch) {
        let offset = self.texts.len();
        self.texts.extend_from_slice(&other.texts);
        self.ends.extend(other.ends.iter().map(|e| e + offset));
    }

    /// The packed members.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.texts[s..e])
    }
}

impl FromIterator<String> for MemberBatch {
    fn from_iter<I: IntoIterator<Item = String>>(members: I) -> MemberBatch {
        let mut batch = MemberBatch::default();
        for m in members {
            batch.push(&m);
        }
        batch
    }
}

/// One audience (Meta custom audience, Google user list).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Audience {
    pub id: String,
    pub platform: String,
    pub account: String,
    pub name: String,
    /// Members as canonical JSON objects of their identifiers (`{"EMAIL": "...", ...}`).
    #[serde(skip)]
    pub members: MemberSet,
    pub size: usize,
}

impl Audience {
    fn summary(&self) -> Audience {
        Audience {
            id: self.id.clone(),
            platform: self.platform.clone(),
            account: self.account.clone(),
            name: self.name.clone(),
            members: MemberSet::default(),
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
    /// the members' hashes, which does not depend on their order.
    contents: std::collections::HashSet<(String, bool, u64)>,
    /// Member sets of audiences a reset forgot, emptied but keeping their memory, largest last,
    /// for the next audiences created (`SPARE_SETS`).
    spare: Vec<MemberSet>,
}

/// How many emptied member sets a reset keeps. A benchmark resets the sandbox between uploads
/// of millions of members (holding B1's 5.2 million, the sandbox takes 1.45 GB), and memory a
/// process has not used before is slow to come by on a VM that hands freed memory back to its
/// host, as Firecracker's do with free page reporting. On such a VM, writing 2 GiB took 3.9 s
/// the first time and 0.25 s when the memory was reused, and zeroing fresh pages was 55% of the
/// Meta emulator's CPU samples in a B1 upload. With the sets kept, the emulator's CPU for the
/// uploads after the first fell from 5.8-7.5 to 2.9-4.0 s (`benches/b1_upload.sh`, 3 rounds).
const SPARE_SETS: usize = 2;

impl Store {
    pub fn with<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        f(&mut self.inner.lock().unwrap().stats)
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().unwrap().stats.clone()
    }

    /// Forgets every audience and count. The largest member sets are kept, emptied, for the
    /// audiences created next (`SPARE_SETS`).
    pub fn reset(&self) {
        let mut inner = self.inner.lock().unwrap();
        let mut spare = std::mem::take(&mut inner.spare);
        spare.extend(
            std::mem::take(&mut inner.audiences)
                .into_values()
                .map(|a| a.members),
        );
        spare.sort_by_key(MemberSet::allocated);
        let keep = spare.split_off(spare.len().saturating_sub(SPARE_SETS));
        *inner = Inner {
            spare: keep
                .into_iter()
                .map(|mut set| {
                    set.clear();
                    set
                })
                .collect(),
            ..Inner::default()
        };
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
        let mut stored = audience.clone();
        if let Some(set) = inner.spare.pop() {
            stored.members = set;
        }
        inner.audiences.insert(id, stored);
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
        let mut sorted: Vec<String> = a.members.iter().collect();
        sorted.sort_unstable();
        Some(
            sorted
                .into_iter()
                .map(|m| serde_json::from_str(&m).unwrap_or_default())
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
        members: MemberBatch,
        replace: bool,
    ) {
        // Hashes before the lock: requests apply one at a time, but hash in parallel.
        let hashes: Vec<u64> = members.iter().map(MemberSet::hash).collect();
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
        if !members.is_empty()
            && !inner.contents.insert((
                id.to_string(),
                add,
                hashes.iter().fold(0, |a, h| a.wrapping_add(*h)),
            ))
        {
            inner.stats.batches_accepted_twice += 1;
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
        for (i, m) in members.iter().enumerate() {
            // Each member's place in the index is far from the last one's: asked for ahead,
            // those waits for memory overlap.
            if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                a.members.prefetch(ahead);
            }
            if add {
                a.members.insert(m, hashes[i], now);
            } else {
                a.members.remove(m, hashes[i]);
            }
        }
        a.size = a.members.len();
    }

    /// Makes room for `additional` more members in an audience.
    pub fn reserve(&self, id: &str, additional: usize) {
        if let Some(a) = self.inner.lock().unwrap().audiences.get_mut(id) {
            a.members.reserve(additional);
        }
    }

    /// Removes the members last added before `as_of` (all of them without a time).
    pub fn remove_added_before(&self, id: &str, as_of: Option<chrono::DateTime<chrono::Utc>>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(a) = inner.audiences.get_mut(id) {
            let cutoff = as_of.map(|t| t.timestamp_micros()).unwrap_or(i64::MAX);
            a.members.retain_added_since(cutoff);
            a.size = a.members.len();
        }
    }

    /// Replaces an audience's members wholesale (end of a replace session).
    pub fn set_members(&self, id: &str, members: MemberBatch) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(a) = inner.audiences.get_mut(id) {
            let now = chrono::Utc::now().timestamp_micros();
            a.members.clear();
            for m in members.iter() {
                a.members.insert(m, MemberSet::hash(m), now);
            }
            a.size = a.members.len();
        }
    }

    pub fn members_set(&self, id: &str) -> BTreeSet<String> {
        self.inner
            .lock()
            .unwrap()
            .audiences
            .get(id)
            .map(|a| a.members.iter().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_batch_keeps_what_was_written_and_takes_back_what_was_refused() {
        let mut batch = MemberBatch::default();
        batch.push(r#"{"EMAIL":"a"}"#);
        assert!(!batch.push_with(|out| {
            out.extend_from_slice(b"half a member");
            false
        }));
        assert!(!batch.push_with(|_| true), "an empty member is not kept");
        assert!(batch.push_with(|out| {
            out.extend_from_slice(br#"{"EMAIL":"b"}"#);
            true
        }));
        let members: Vec<String> = batch.iter().map(unpack).collect();
        assert_eq!(members, [r#"{"EMAIL":"a"}"#, r#"{"EMAIL":"b"}"#]);
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn a_member_set_holds_each_member_once_with_when_it_was_last_added() {
        let mut set = MemberSet::default();
        let [a, b, c] = [
            br#"{"EMAIL":"a"}"#,
            br#"{"EMAIL":"b"}"#,
            br#"{"EMAIL":"c"}"#,
        ];
        let add = |set: &mut MemberSet, m: &[u8], at| set.insert(m, MemberSet::hash(m), at);
        add(&mut set, a, 1);
        add(&mut set, b, 1);
        add(&mut set, a, 3);
        assert_eq!(set.len(), 2, "a member added twice is in once");
        set.remove(b, MemberSet::hash(b));
        set.remove(c, MemberSet::hash(c));
        assert_eq!(
            set.len(),
            1,
            "removing a member not in the set changes nothing"
        );
        add(&mut set, b, 2);
        add(&mut set, c, 2);
        set.retain_added_since(2);
        let mut members: Vec<String> = set.iter().collect();
        members.sort();
        assert_eq!(
            members,
            [r#"{"EMAIL":"a"}"#, r#"{"EMAIL":"b"}"#, r#"{"EMAIL":"c"}"#]
        );
        set.retain_added_since(3);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [r#"{"EMAIL":"a"}"#],
            "a was last added at 3"
        );
        set.clear();
        assert!(set.is_empty());
        add(&mut set, c, 4);
        assert_eq!(set.iter().collect::<Vec<_>>(), [r#"{"EMAIL":"c"}"#]);
    }

    #[test]
    fn members_are_kept_with_their_hex_hashes_packed_and_read_back_as_they_were_written() {
        let hex = "0123456789abcdef".repeat(4);
        let texts = [
            format!(r#"{{"EMAIL":"{hex}","FN":"{hex}"}}"#),
            // Not packed: upper case, 63 digits, a quote inside a string, raw values.
            format!(r#"{{"EMAIL":"{}"}}"#, hex.to_uppercase()),
            format!(r#"{{"EMAIL":"{}"}}"#, &hex[1..]),
            format!(r#"{{"EXTERN_ID":"a\"{hex}\"b","MADID":"x"}}"#),
            r#"{"COUNTRY":"us","ZIP":"02134"}"#.to_string(),
            // Keys: known ones packed, other keys and values that look like keys kept as text.
            r#"{"emailAddress":"a","regionCode":"US","other":"EMAIL","x\"EMAIL":1,"EMAIL":["ZIP"]}"#.to_string(),
        ];
        for text in &texts {
            let mut packed = vec![];
            pack(text, &mut packed);
            assert_eq!(&unpack(&packed), text);
        }
        let mut packed = vec![];
        pack(&texts[0], &mut packed);
        assert_eq!(
            packed.len(),
            texts[0].len() - 2 * 33 - ("\"EMAIL\":".len() - 1) - ("\"FN\":".len() - 1),
            "two hashes and two keys packed"
        );

        let mut written = vec![b'{'];
        written.extend_from_slice(&packed_key("EMAIL"));
        push_member_value(&mut written, &hex);
        written.push(b',');
        written.extend_from_slice(&packed_key("FN"));
        push_member_value(&mut written, &hex);
        written.push(b'}');
        assert_eq!(
            written, packed,
            "written packed, or packed from text: the same member"
        );
    }

    #[test]
    fn only_a_sha256_in_lowercase_hex_is_packed_as_a_hash() {
        let hex = "0123456789abcdef".repeat(4);
        let mut out = vec![];
        assert!(push_packed_hash(&mut out, &hex));
        assert_eq!(out.len(), 33);
        assert_eq!(unpack(&out), format!("\"{hex}\""));
        for bad in [
            hex.to_uppercase(),
            hex[1..].to_string(),
            format!("{hex}0"),
            hex.replace('f', "g"),
            hex.replacen('0', " ", 1),
            String::new(),
        ] {
            let mut out = vec![];
            assert!(!push_packed_hash(&mut out, &bad), "{bad:?}");
            assert!(out.is_empty(), "nothing written for {bad:?}");
        }
    }

    #[test]
    fn applying_a_batch_adds_and_removes_its_members() {
        let store = Store::default();
        let id = store.create("meta", "1", "a").id;
        let batch: MemberBatch = ["x", "y", "z"].iter().map(|m| m.to_string()).collect();
        store.apply(&id, None, true, batch, false);
        let gone: MemberBatch = ["y".to_string()].into_iter().collect();
        store.apply(&id, None, false, gone, false);
        let left: Vec<String> = store.members_set(&id).into_iter().collect();
        assert_eq!(left, ["x", "z"]);
        assert_eq!(store.get(&id).unwrap().size, 2);
    }

    #[test]
    fn a_reset_forgets_every_member_and_keeps_the_largest_sets_memory_for_new_audiences() {
        let store = Store::default();
        let ids: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|name| store.create("meta", "1", name).id)
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let batch: MemberBatch = (0..100 * (i + 1)).map(|m| format!("{id}-{m}")).collect();
            store.apply(id, None, true, batch, false);
        }
        store.reset();
        let spare = |store: &Store| -> Vec<usize> {
            let inner = store.inner.lock().unwrap();
            inner.spare.iter().map(MemberSet::allocated).collect()
        };
        let kept = spare(&store);
        assert_eq!(kept.len(), SPARE_SETS);
        assert!(
            kept.windows(2).all(|w| w[0] <= w[1]),
            "largest last: {kept:?}"
        );
        assert!(store.list().is_empty());

        let id = store.create("meta", "1", "d").id;
        assert_eq!(
            spare(&store).len(),
            SPARE_SETS - 1,
            "the new audience took a set"
        );
        assert!(
            store.members_set(&id).is_empty(),
            "no member outlives a reset"
        );
        assert_eq!(store.get(&id).unwrap().size, 0);
        let batch: MemberBatch = ["x".to_string()].into_iter().collect();
        store.apply(&id, None, true, batch, false);
        let members: Vec<String> = store.members_set(&id).into_iter().collect();
        assert_eq!(members, ["x"]);
    }

    #[test]
    fn known_keys_are_packed_as_one_byte_and_others_as_text() {
        assert_eq!(packed_key("EMAIL").len(), 1);
        assert_eq!(packed_key("regionCode").len(), 1);
        assert_eq!(packed_key("email"), br#""email":"#);
        assert_eq!(packed_key("a\"b"), br#""a\"b":"#);
        // Written from a request or packed from text, a member is the same bytes, whatever its
        // keys look like.
        let hex = "0123456789abcdef".repeat(4);
        for key in ["x\"EMAIL", "x\\", hex.as_str(), "EMAIL\"", "\"FN"] {
            let mut text = b"{".to_vec();
            crate::json::push_string(&mut text, key);
            text.extend_from_slice(b":1}");
            let text = String::from_utf8(text).unwrap();
            let mut packed = vec![];
            pack(&text, &mut packed);
            assert_eq!(
                packed,
                [&b"{"[..], &packed_key(key), b"1}"].concat(),
                "{text}"
            );
            assert_eq!(unpack(&packed), text);
        }
        for key in PACKED_KEYS {
            let mut packed = vec![];
            pack(&format!(r#"{{"{key}":"v"}}"#), &mut packed);
            assert_eq!(
                packed,
                [&b"{"[..], &packed_key(key), br#""v"}"#].concat(),
                "{key}"
            );
            assert_eq!(unpack(&packed), format!(r#"{{"{key}":"v"}}"#));
        }
    }
}
