//! Member batches to the body of a users BATCH_CREATE: `{"elements": [{"action": "ADD",
//! "userIds": [{"idType": "SHA256_EMAIL", "idValue": …}, {"idType": "GOOGLE_AID", "idValue":
//! …}]}, …]}`, one element a member, with the user IDs the member has: the e-mail's SHA-256 in
//! lowercase hex as the meta profile writes it (`email_sha256`), and the mobile ad id as it is
//! (`mobile_ad_id`: LinkedIn takes `GOOGLE_AID` raw). Members with neither are not sent.
//!
//! Why no `firstName`, `lastName` or `country`: LinkedIn takes them as clear text (the peers
//! send them as given: Segment's `LinkedInUserAudienceJSON`, RudderStack's `fields`), while the
//! meta profile, the one whose e-mail hashes LinkedIn matches, keeps only their SHA-256
//! (`first_name_sha256`, ...); a hash sent as a name matches no one, and activator keeps no name
//! in clear. So elements carry user IDs only.

use crate::error::{Error, Result};
use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};

/// The member columns user IDs come from, with their `idType`.
const ID_COLUMNS: [(&str, &str); 2] = [
    ("email_sha256", "SHA256_EMAIL"),
    ("mobile_ad_id", "GOOGLE_AID"),
];

/// Where a batch's user IDs are.
#[derive(Clone, Debug)]
pub struct ElementEncoder {
    /// Column index and `idType`.
    columns: Vec<(usize, &'static str)>,
}

/// A batch's body, what its elements are, and who was left out.
pub struct Elements {
    pub body: Vec<u8>,
    /// Per element, in order: its first user ID's type and length (masked samples of refused
    /// elements are made of them, never of values).
    pub sent: Vec<(&'static str, usize)>,
    pub without_identifier: u64,
}

impl ElementEncoder {
    pub fn new(schema: &SchemaRef) -> Result<ElementEncoder> {
        let columns: Vec<(usize, &'static str)> = ID_COLUMNS
            .iter()
            .filter_map(|&(name, id_type)| {
                let i = schema.index_of(name).ok()?;
                (schema.field(i).data_type() == &DataType::Utf8).then_some((i, id_type))
            })
            .collect();
        if columns.is_empty() {
            return Err(Error::config(
                "linkedin: map email or mobile_ad_id (the identifiers LinkedIn DMP segments take)",
            ));
        }
        Ok(ElementEncoder { columns })
    }

    /// The BATCH_CREATE body of a batch in parts (`batch::Parts`), every element `action`.
    pub fn elements(&self, parts: &[RecordBatch], action: &str) -> Elements {
        let rows = crate::batch::num_rows(parts);
        let mut body = Vec::with_capacity(rows * (60 + 90 * self.columns.len()) + 16);
        let mut sent = Vec::with_capacity(rows);
        let mut without_identifier = 0u64;
        body.extend_from_slice(b"{\"elements\":[");
        for batch in parts {
            // Each column checked once for what JSON must escape (`json::is_plain_column`).
            let columns: Vec<(&StringArray, &'static str, bool)> = self
                .columns
                .iter()
                .map(|&(i, id_type)| {
                    let column = batch.column(i).as_string::<i32>();
                    (column, id_type, crate::json::is_plain_column(column))
                })
                .collect();
            for row in 0..batch.num_rows() {
                let ids = || {
                    columns
                        .iter()
                        .filter(move |(c, ..)| c.is_valid(row) && !c.value(row).is_empty())
                        .map(move |(c, id_type, plain)| (*id_type, c.value(row), *plain))
                };
                let Some((first_type, first_value, _)) = ids().next() else {
                    without_identifier += 1;
                    continue;
                };
                if !sent.is_empty() {
                    body.push(b',');
                }
                sent.push((first_type, first_value.chars().count()));
                body.extend_from_slice(b"{\"action\":");
                crate::json::push_string(&mut body, action);
                body.extend_from_slice(b",\"userIds\":[");
                for (n, (id_type, value, plain)) in ids().enumerate() {
                    if n > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(b"{\"idType\":");
                    crate::json::push_string(&mut body, id_type);
                    body.extend_from_slice(b",\"idValue\":");
                    crate::json::push_string_of(&mut body, value, plain);
                    body.push(b'}');
                }
                body.extend_from_slice(b"]}");
            }
        }
        body.extend_from_slice(b"]}");
        Elements {
            body,
            sent,
            without_identifier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::ArrayRef;
    use serde_json::{Value, json};
    use std::sync::Arc;

    #[test]
    fn one_element_a_member_with_the_ids_it_has() {
        let e = "a".repeat(64);
        let maid = "6d92078a-8246-4ba4-ae5b-76104861e7dc";
        let batch = RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(vec![
                    Some(e.as_str()),
                    None,
                    None,
                    Some(&e),
                ])) as ArrayRef,
            ),
            (
                "first_name_sha256",
                Arc::new(StringArray::from(vec![Some("f"); 4])) as ArrayRef,
            ),
            (
                "mobile_ad_id",
                Arc::new(StringArray::from(vec![Some(maid), Some(maid), None, None])) as ArrayRef,
            ),
        ])
        .unwrap();
        let encoder = ElementEncoder::new(&batch.schema()).unwrap();
        let whole = encoder.elements(std::slice::from_ref(&batch), "ADD");
        let body: Value = serde_json::from_slice(&whole.body).unwrap();
        let email = |v: &str| json!({"idType": "SHA256_EMAIL", "idValue": v});
        let gaid = json!({"idType": "GOOGLE_AID", "idValue": maid});
        assert_eq!(
            body,
            json!({"elements": [
                {"action": "ADD", "userIds": [email(&e), gaid]},
                {"action": "ADD", "userIds": [gaid]},
                {"action": "ADD", "userIds": [email(&e)]},
            ]}),
            "names are not sent; the row with no user ID is left out"
        );
        assert_eq!(whole.without_identifier, 1);
        assert_eq!(
            whole.sent,
            [
                ("SHA256_EMAIL", 64),
                ("GOOGLE_AID", 36),
                ("SHA256_EMAIL", 64)
            ]
        );
        let parts = encoder.elements(&[batch.slice(0, 2), batch.slice(2, 2)], "ADD");
        assert_eq!(
            parts.body, whole.body,
            "a batch in parts is sent as the batch"
        );
        let removes: Value =
            serde_json::from_slice(&encoder.elements(&[batch.slice(1, 1)], "REMOVE").body).unwrap();
        assert_eq!(
            removes,
            json!({"elements": [{"action": "REMOVE", "userIds": [gaid]}]})
        );
    }

    #[test]
    fn values_json_must_escape_are_escaped_in_any_place_of_a_column_and_its_parts() {
        let hostile = "id\"},{\"idType\":\"X\\\n";
        let ids = ["plain-1", hostile, "plain-2"];
        let batch = RecordBatch::try_from_iter([(
            "mobile_ad_id",
            Arc::new(StringArray::from(ids.to_vec())) as ArrayRef,
        )])
        .unwrap();
        let encoder = ElementEncoder::new(&batch.schema()).unwrap();
        let expected = json!({"elements": ids.map(|id| json!(
            {"action": "ADD", "userIds": [{"idType": "GOOGLE_AID", "idValue": id}]}
        ))});
        for parts in [
            vec![batch.clone()],
            vec![batch.slice(0, 1), batch.slice(1, 2)],
            vec![batch.slice(0, 2), batch.slice(2, 1)],
        ] {
            let body: Value =
                serde_json::from_slice(&encoder.elements(&parts, "ADD").body).unwrap();
            assert_eq!(body, expected);
        }
    }

    #[test]
    fn a_batch_without_user_id_columns_is_refused() {
        let batch = RecordBatch::try_from_iter([(
            "phone_sha256",
            Arc::new(StringArray::from(vec![Some("p")])) as ArrayRef,
        )])
        .unwrap();
        assert!(ElementEncoder::new(&batch.schema()).is_err());
    }
}
