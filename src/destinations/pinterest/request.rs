//! Member batches to Pinterest's `records`: one string of the list's kind, comma-separated,
//! each a SHA-256 in lowercase hex (e-mails as the meta profile hashes them, trimmed and
//! lowercased as Pinterest asks; mobile ad ids hashed here, as Pinterest takes them hashed
//! only). A hash two members share goes once per request. Hashes hold no comma, so no record
//! needs quoting.

use crate::destinations::ids::{IdColumn, IdKind};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Where a batch's records are read from.
#[derive(Clone, Debug)]
pub struct RecordsEncoder {
    column: IdColumn,
}

/// A batch's records, and its counts.
pub struct Records {
    /// `a,b,c`
    pub text: String,
    /// Distinct records in `text`.
    pub count: u64,
    /// Members without the list's identifier (not in `text`).
    pub without_identifier: u64,
}

impl RecordsEncoder {
    /// The encoder of a list of `kind`, if the members carry it.
    pub fn new(schema: &SchemaRef, kind: IdKind) -> Option<RecordsEncoder> {
        IdColumn::find(schema, kind).map(|column| RecordsEncoder { column })
    }

    /// The records of a batch given in parts (read in place: nothing is concatenated).
    pub fn records(&self, parts: &[RecordBatch]) -> Records {
        let rows: usize = parts.iter().map(RecordBatch::num_rows).sum();
        let mut text = String::with_capacity(rows * 65);
        let mut seen = HashSet::with_capacity(rows);
        let mut with_identifier = 0u64;
        for part in parts {
            self.column.each_hash(part, |_, hash| {
                with_identifier += 1;
                if seen.insert(hash.to_string()) {
                    if !text.is_empty() {
                        text.push(',');
                    }
                    text.push_str(hash);
                }
            });
        }
        Records {
            text,
            count: seen.len() as u64,
            without_identifier: rows as u64 - with_identifier,
        }
    }
}

/// The body of a list update: `ADD` or `REMOVE` of the records.
pub fn update(operation: &str, records: &str) -> Value {
    json!({ "operation_type": operation, "records": records })
}

/// The body that creates a list with its first records.
pub fn create(name: &str, list_type: &str, records: &str) -> Value {
    json!({ "name": name, "records": records, "list_type": list_type })
}

/// The body of the `CUSTOMER_LIST` audience that makes a list targetable.
pub fn targeting_audience(name: &str, list_id: &str) -> Value {
    json!({
        "audience_type": "CUSTOMER_LIST",
        "name": name,
        "rule": { "customer_list_id": list_id },
        "description": "Managed by activator: the customer list of the same name",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;

    fn emails(values: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "email_sha256",
            Arc::new(StringArray::from(values)) as ArrayRef,
        )])
        .unwrap()
    }

    #[test]
    fn one_comma_separated_string_of_distinct_hashes_across_parts() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let parts = vec![
            emails(vec![Some(a.as_str()), None, Some(b.as_str())]),
            emails(vec![Some(a.as_str()), Some(b.as_str()), None]),
        ];
        let encoder = RecordsEncoder::new(&parts[0].schema(), IdKind::Email).unwrap();
        let records = encoder.records(&parts);
        assert_eq!(records.text, format!("{a},{b}"));
        assert_eq!((records.count, records.without_identifier), (2, 2));
        assert!(RecordsEncoder::new(&parts[0].schema(), IdKind::MobileAdId).is_none());
    }

    #[test]
    fn mobile_ad_ids_are_hashed() {
        use crate::identity::{Encoding, hash};
        let maid = "6d92078a-8246-4ba4-ae5b-76104861e7dc";
        let batch = RecordBatch::try_from_iter([(
            "mobile_ad_id",
            Arc::new(StringArray::from(vec![Some(maid)])) as ArrayRef,
        )])
        .unwrap();
        let encoder = RecordsEncoder::new(&batch.schema(), IdKind::MobileAdId).unwrap();
        assert_eq!(
            encoder.records(&[batch]).text,
            hash::hash_to_string(maid, Encoding::Hex)
        );
    }
}
