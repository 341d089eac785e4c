//! Member batches to the two requests of a send: the identity-map JSON (`email_hash` and
//! `phone_hash` lists of the Base64 SHA-256 the uid2 profile writes) and the data API's body
//! (`{"AdvertiserId", "Items": [{"UID2": id, "Data": [{"Name", "TtlInMinutes"}]}]}`).
//!
//! Identifiers are gathered once per batch, e-mails and phones in one list without repeats (a
//! phone two members share is mapped once), with each member's place in it, so what the
//! operator answers can be told per member: a member none of whose identifiers mapped was not
//! sent.

use crate::destinations::ids::{IdColumn, IdKind};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Where a batch's identifiers are read from: the kinds the destination sends that the
/// members carry.
#[derive(Clone, Debug)]
pub struct IdentifierColumns {
    columns: Vec<IdColumn>,
}

impl IdentifierColumns {
    /// The columns of `kinds` in `schema`; `None` if the members carry none of them.
    pub fn new(schema: &SchemaRef, kinds: &[IdKind]) -> Option<IdentifierColumns> {
        let columns: Vec<IdColumn> = kinds
            .iter()
            .filter_map(|&k| IdColumn::find(schema, k))
            .collect();
        (!columns.is_empty()).then_some(IdentifierColumns { columns })
    }

    /// A batch's distinct identifiers and each member's, read in place.
    pub fn read(&self, parts: &[RecordBatch]) -> BatchIdentifiers {
        let mut batch = BatchIdentifiers::default();
        let mut seen: HashMap<(IdKind, String), u32> = HashMap::new();
        for part in parts {
            let first_member = batch.members.len();
            batch
                .members
                .resize(first_member + part.num_rows(), MemberIds::default());
            for column in &self.columns {
                column.each_hash(part, |row, hash| {
                    let next = batch.identifiers.len() as u32;
                    let index = *seen.entry((column.kind, hash.to_string())).or_insert(next);
                    if index == next {
                        batch.identifiers.push((column.kind, hash.to_string()));
                    }
                    batch.members[first_member + row].push(index);
                });
            }
        }
        batch
    }
}

/// A member's identifiers: indices into `BatchIdentifiers::identifiers` (an e-mail, a phone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberIds {
    ids: [Option<u32>; 2],
}

impl MemberIds {
    fn push(&mut self, index: u32) {
        if let Some(slot) = self.ids.iter_mut().find(|s| s.is_none()) {
            *slot = Some(index);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.ids.iter().flatten().map(|&i| i as usize)
    }
}

/// A batch's identifiers.
#[derive(Debug, Default)]
pub struct BatchIdentifiers {
    /// Distinct (kind, Base64 hash), in the order first met.
    pub identifiers: Vec<(IdKind, String)>,
    /// Each member's identifiers, in the batch's order.
    pub members: Vec<MemberIds>,
}

/// One identity-map request: its JSON, and where each answer goes.
pub struct MapRequest {
    pub json: Vec<u8>,
    /// The places (in the chunk mapped) of the `email_hash` entries, then of the `phone_hash`.
    pub emails: Vec<usize>,
    pub phones: Vec<usize>,
}

/// The identity-map request of a chunk of identifiers (at most `MAX_MAP_ITEMS`).
pub fn map_request(chunk: &[(IdKind, String)]) -> MapRequest {
    let (mut emails, mut phones) = (vec![], vec![]);
    let (mut email_hashes, mut phone_hashes) = (vec![], vec![]);
    for (place, (kind, hash)) in chunk.iter().enumerate() {
        match kind {
            IdKind::Phone => {
                phones.push(place);
                phone_hashes.push(hash.as_str());
            }
            _ => {
                emails.push(place);
                email_hashes.push(hash.as_str());
            }
        }
    }
    let body = json!({ "email_hash": email_hashes, "phone_hash": phone_hashes });
    MapRequest {
        json: serde_json::to_vec(&body).expect("JSON of strings"),
        emails,
        phones,
    }
}

/// What each data item carries besides its id: the segment and the TTL (0 removes).
#[derive(Clone, Debug)]
pub struct SegmentData {
    pub advertiser_id: String,
    pub name: String,
    pub ttl_minutes: u32,
    /// `UID2` or `EUID`.
    pub item_key: &'static str,
}

impl SegmentData {
    /// The body of a data request for `ids`.
    pub fn body(&self, ids: &[String]) -> Vec<u8> {
        let data = json!([{ "Name": self.name, "TtlInMinutes": self.ttl_minutes }]);
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({ self.item_key: id, "Data": data }))
            .collect();
        let body = json!({ "AdvertiserId": self.advertiser_id, "Items": items });
        serde_json::to_vec(&body).expect("JSON of strings and numbers")
    }

    /// Items a request may carry within `max_bytes`: each is its id (a UID2 is 44 characters),
    /// the segment's name as JSON and some 60 bytes of keys and punctuation.
    pub fn items_per_request(&self, max_bytes: usize) -> usize {
        let name = serde_json::to_string(&self.name).map_or(0, |n| n.len());
        let item = 44 + name + self.item_key.len() + 64;
        (max_bytes / item).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;

    fn members(emails: Vec<Option<&str>>, phones: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(emails)) as ArrayRef,
            ),
            (
                "phone_sha256",
                Arc::new(StringArray::from(phones)) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn identifiers_are_gathered_once_with_each_member_s_places() {
        let parts = vec![
            members(vec![Some("e1"), None], vec![Some("p1"), Some("p1")]),
            members(vec![Some("e2"), None], vec![None, None]),
        ];
        let columns =
            IdentifierColumns::new(&parts[0].schema(), &[IdKind::Email, IdKind::Phone]).unwrap();
        let batch = columns.read(&parts);
        assert_eq!(
            batch.identifiers,
            [
                (IdKind::Email, "e1".to_string()),
                (IdKind::Phone, "p1".to_string()),
                (IdKind::Email, "e2".to_string()),
            ]
        );
        let places: Vec<Vec<usize>> = batch.members.iter().map(|m| m.iter().collect()).collect();
        assert_eq!(places, [vec![0, 1], vec![1], vec![2], vec![]]);
        // A destination sent phones only reads no e-mail.
        let phones = IdentifierColumns::new(&parts[0].schema(), &[IdKind::Phone]).unwrap();
        assert_eq!(phones.read(&parts).identifiers.len(), 1);
        assert!(IdentifierColumns::new(&parts[0].schema(), &[IdKind::MobileAdId]).is_none());
    }

    #[test]
    fn a_map_request_lists_e_mails_and_phones_and_remembers_their_places() {
        let chunk = vec![
            (IdKind::Phone, "p".to_string()),
            (IdKind::Email, "e".to_string()),
            (IdKind::Phone, "q".to_string()),
        ];
        let request = map_request(&chunk);
        let body: Value = serde_json::from_slice(&request.json).unwrap();
        assert_eq!(body, json!({"email_hash": ["e"], "phone_hash": ["p", "q"]}));
        assert_eq!((request.emails, request.phones), (vec![1], vec![0, 2]));
    }

    #[test]
    fn data_items_carry_the_segment_and_the_ttl_and_fit_the_request_size() {
        let segment = SegmentData {
            advertiser_id: "abc1234".into(),
            name: "Nightly spenders".into(),
            ttl_minutes: 0,
            item_key: "UID2",
        };
        let uid2 = "AdvIvSiaum0P5s3X/7X8h8sz+OhF2IG8DNbEnkWSbYM=".to_string();
        let body: Value =
            serde_json::from_slice(&segment.body(std::slice::from_ref(&uid2))).unwrap();
        assert_eq!(
            body,
            json!({"AdvertiserId": "abc1234", "Items": [
                {"UID2": uid2, "Data": [{"Name": "Nightly spenders", "TtlInMinutes": 0}]}
            ]})
        );
        let per_request = segment.items_per_request(super::super::MAX_DATA_REQUEST_BYTES);
        let ids: Vec<String> = vec![uid2; per_request];
        assert!(segment.body(&ids).len() <= super::super::MAX_DATA_REQUEST_BYTES);
        assert!(
            per_request >= 10_000,
            "a removal's batch is one request: {per_request}"
        );
    }
}
