//! Member batches to the body of X's users endpoint: a JSON array of operations, each
//! `{"operation_type": "Update"|"Delete", "params": {"users": [user]}}` with one user, whose
//! identifiers are arrays of SHA-256 in lowercase hex under X's names: `email` (the meta
//! profile's hash of the trimmed, lowercased address), `phone_number` (when the job sends phones)
//! and `device_id` (the mobile ad id, which the meta profile keeps raw as a lowercase UUID, hashed
//! here: X takes every identifier but `partner_user_id` hashed).
//!
//! One user an operation: X's batch limit counts operations and its earlier pages counted users,
//! and its `success_count` counts "records"; with one user each, every reading gives the same
//! number, so the answer can be checked against what was sent whatever X counts. A member with
//! none of the kinds sent is not in the body and is counted.

use super::MAX_OPERATION_BYTES;
use crate::destinations::ids::{IdColumn, IdKind};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

/// What a batch does to the audience.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Adds (or refreshes) users.
    Update,
    /// Removes users.
    Delete,
}

impl Operation {
    /// X's `operation_type`.
    pub fn api_name(self) -> &'static str {
        match self {
            Operation::Update => "Update",
            Operation::Delete => "Delete",
        }
    }
}

/// The key of an identifier kind in X's user object.
pub fn field(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Email => "email",
        IdKind::Phone => "phone_number",
        IdKind::MobileAdId => "device_id",
    }
}

/// Where a batch's identifiers are read from.
#[derive(Clone, Debug)]
pub struct UsersEncoder {
    columns: Vec<IdColumn>,
}

/// A batch's body, and its counts.
pub struct Users {
    /// The JSON array of operations.
    pub body: Vec<u8>,
    /// Users (and operations) in `body`.
    pub count: u64,
    /// Members with none of the kinds sent (not in `body`).
    pub without_identifier: u64,
}

impl UsersEncoder {
    /// The encoder of the `kinds` the members carry; `None` if they carry none.
    pub fn new(schema: &SchemaRef, kinds: &[IdKind]) -> Option<UsersEncoder> {
        let columns: Vec<IdColumn> = kinds
            .iter()
            .filter_map(|&kind| IdColumn::find(schema, kind))
            .collect();
        (!columns.is_empty()).then_some(UsersEncoder { columns })
    }

    /// The body of a batch given in parts (read in place: nothing is concatenated).
    pub fn users(&self, parts: &[RecordBatch], operation: Operation) -> Users {
        let rows: usize = parts.iter().map(RecordBatch::num_rows).sum();
        let mut body = Vec::with_capacity(2 + rows * MAX_OPERATION_BYTES / 2);
        body.push(b'[');
        let mut count = 0u64;
        for part in parts {
            for user in self.user_fields(part) {
                if user.is_empty() {
                    continue;
                }
                if count > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(b"{\"operation_type\":\"");
                body.extend_from_slice(operation.api_name().as_bytes());
                body.extend_from_slice(b"\",\"params\":{\"users\":[{");
                body.extend_from_slice(&user);
                body.extend_from_slice(b"}]}}");
                count += 1;
            }
        }
        body.push(b']');
        Users {
            body,
            count,
            without_identifier: rows as u64 - count,
        }
    }

    /// Each row's user object without its braces (`"email":["…"],"device_id":["…"]`), empty
    /// for a row with none of the kinds.
    fn user_fields(&self, part: &RecordBatch) -> Vec<Vec<u8>> {
        let mut users = vec![Vec::new(); part.num_rows()];
        for column in &self.columns {
            let key = field(column.kind);
            column.each_hash(part, |row, hash| {
                let user = &mut users[row];
                if !user.is_empty() {
                    user.push(b',');
                }
                user.push(b'"');
                user.extend_from_slice(key.as_bytes());
                user.extend_from_slice(b"\":[");
                crate::json::push_string(user, hash);
                user.push(b']');
            });
        }
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Encoding, hash};
    use arrow::array::{ArrayRef, StringArray};
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn members(emails: Vec<Option<&str>>, maids: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(emails)) as ArrayRef,
            ),
            (
                "mobile_ad_id",
                Arc::new(StringArray::from(maids)) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn one_operation_a_user_with_every_identifier_it_has_across_parts() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let maid = "6d92078a-8246-4ba4-ae5b-76104861e7dc";
        let hashed_maid = hash::hash_to_string(maid, Encoding::Hex);
        let parts = vec![
            members(vec![Some(a.as_str()), None], vec![Some(maid), None]),
            members(vec![Some(b.as_str())], vec![None]),
        ];
        let kinds = [IdKind::Email, IdKind::Phone, IdKind::MobileAdId];
        let encoder = UsersEncoder::new(&parts[0].schema(), &kinds).unwrap();
        let users = encoder.users(&parts, Operation::Delete);
        assert_eq!((users.count, users.without_identifier), (2, 1));
        let body: Value = serde_json::from_slice(&users.body).unwrap();
        assert_eq!(
            body,
            json!([
                {"operation_type": "Delete", "params": {"users": [{"email": [a], "device_id": [hashed_maid]}]}},
                {"operation_type": "Delete", "params": {"users": [{"email": [b]}]}},
            ])
        );
        assert!(UsersEncoder::new(&parts[0].schema(), &[IdKind::Phone]).is_none());
    }

    #[test]
    fn an_operation_of_every_kind_fits_the_bound_a_full_batch_is_cut_by() {
        let h = "f".repeat(64);
        let batch = RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(vec![h.as_str()])) as ArrayRef,
            ),
            (
                "phone_sha256",
                Arc::new(StringArray::from(vec![h.as_str()])) as ArrayRef,
            ),
            (
                "mobile_ad_id",
                Arc::new(StringArray::from(vec![
                    "6d92078a-8246-4ba4-ae5b-76104861e7dc",
                ])) as ArrayRef,
            ),
        ])
        .unwrap();
        let encoder = UsersEncoder::new(&batch.schema(), &IdKind::ALL).unwrap();
        let users = encoder.users(&[batch], Operation::Update);
        assert_eq!(users.count, 1);
        // The array's brackets aside, one operation and its comma.
        assert!(
            users.body.len() - 2 < MAX_OPERATION_BYTES,
            "{}",
            users.body.len()
        );
        let body: Value = serde_json::from_slice(&users.body).unwrap();
        assert_eq!(body[0]["operation_type"], "Update");
        assert_eq!(body[0]["params"]["users"][0]["phone_number"][0], h.as_str());
    }

    #[test]
    fn x_s_documented_device_id_is_hashed_as_x_normalizes_it() {
        // X's user-data page: an IDFA is "lower-cased with dashes", e.g.
        // 4b61639e-47cc-4056-a16a-c8217e029462 (hash recomputed with Python's hashlib).
        let idfa = "4b61639e-47cc-4056-a16a-c8217e029462";
        let batch = RecordBatch::try_from_iter([(
            "mobile_ad_id",
            Arc::new(StringArray::from(vec![idfa])) as ArrayRef,
        )])
        .unwrap();
        let encoder = UsersEncoder::new(&batch.schema(), &[IdKind::MobileAdId]).unwrap();
        let body: Value =
            serde_json::from_slice(&encoder.users(&[batch], Operation::Update).body).unwrap();
        assert_eq!(
            body[0]["params"]["users"][0]["device_id"][0],
            "225859d35b46df63b4fb381eb3f815b2ef4620bec0a79f2115a6a3eb71a5fa1a"
        );
    }
}
