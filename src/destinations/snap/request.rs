//! Member batches to the body of `/segments/{id}/users`: one `users` element per identifier
//! schema (`EMAIL_SHA256`, `PHONE_SHA256`, `MOBILE_AD_ID_SHA256`), each row a one-element array,
//! hashes de-duplicated within the request as Snap asks. Multi-column rows are UNCONFIRMED, so
//! every element has a single schema.

use crate::destinations::ids::{IdColumn, IdKind};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde_json::{Value, json};
use std::collections::HashSet;

pub fn schema_name(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Email => "EMAIL_SHA256",
        IdKind::Phone => "PHONE_SHA256",
        IdKind::MobileAdId => "MOBILE_AD_ID_SHA256",
    }
}

/// The identifier columns a batch is encoded from.
#[derive(Clone, Debug)]
pub struct UsersEncoder {
    columns: Vec<IdColumn>,
}

/// A batch's body, and its counts.
pub struct Users {
    pub body: Value,
    pub identifiers: u64,
    pub without_identifier: u64,
}

impl UsersEncoder {
    pub fn new(schema: &SchemaRef) -> Result<UsersEncoder> {
        let columns: Vec<IdColumn> = [IdKind::Email, IdKind::Phone, IdKind::MobileAdId]
            .into_iter()
            .filter_map(|k| IdColumn::find(schema, k))
            .collect();
        if columns.is_empty() {
            return Err(Error::config(
                "snap: map email, phone or mobile_ad_id (the identifiers Snap customer lists take)",
            ));
        }
        Ok(UsersEncoder { columns })
    }

    pub fn users(&self, batch: &RecordBatch) -> Users {
        let mut has_identifier = vec![false; batch.num_rows()];
        let mut elements = vec![];
        let mut identifiers = 0u64;
        for column in &self.columns {
            let mut seen = HashSet::new();
            let mut data = vec![];
            column.each_hash(batch, |row, hash| {
                has_identifier[row] = true;
                if seen.insert(hash.to_string()) {
                    data.push(json!([hash]));
                }
            });
            if !data.is_empty() {
                identifiers += data.len() as u64;
                elements.push(json!({"schema": [schema_name(column.kind)], "data": data}));
            }
        }
        Users {
            body: json!({ "users": elements }),
            identifiers,
            without_identifier: has_identifier.iter().filter(|h| !**h).count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;

    #[test]
    fn one_element_per_schema_deduplicated() {
        let a = "a".repeat(64);
        let p = "c".repeat(64);
        let batch = RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(vec![Some(a.as_str()), Some(&a), None])) as ArrayRef,
            ),
            (
                "phone_sha256",
                Arc::new(StringArray::from(vec![None, Some(p.as_str()), None])) as ArrayRef,
            ),
        ])
        .unwrap();
        let users = UsersEncoder::new(&batch.schema()).unwrap().users(&batch);
        assert_eq!(
            users.body,
            json!({"users": [
                {"schema": ["EMAIL_SHA256"], "data": [[a]]},
                {"schema": ["PHONE_SHA256"], "data": [[p]]},
            ]})
        );
        assert_eq!((users.identifiers, users.without_identifier), (2, 1));
    }
}
