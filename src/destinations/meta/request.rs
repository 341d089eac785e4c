//! Member batches to the Graph API's multi-key payload: `{"schema": [...], "data": [[...]]}`.

use crate::error::{Error, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use std::fmt::Write;

/// Output columns and the Meta keys they fill.
const KEYS: &[(&str, &str)] = &[
    ("email_sha256", "EMAIL"),
    ("phone_sha256", "PHONE"),
    ("first_name_sha256", "FN"),
    ("last_name_sha256", "LN"),
    ("city_sha256", "CT"),
    ("state_sha256", "ST"),
    ("zip_sha256", "ZIP"),
    ("country_sha256", "COUNTRY"),
    ("doby_sha256", "DOBY"),
    ("dobm_sha256", "DOBM"),
    ("dobd_sha256", "DOBD"),
    ("gender_sha256", "GEN"),
    ("mobile_ad_id", "MADID"),
    ("external_id", "EXTERN_ID"),
];

/// Which batch columns go out, under which keys.
#[derive(Clone, Debug)]
pub struct PayloadSchema {
    pub keys: Vec<&'static str>,
    columns: Vec<usize>,
}

impl PayloadSchema {
    pub fn new(schema: &SchemaRef) -> Result<PayloadSchema> {
        let mut keys = vec![];
        let mut columns = vec![];
        for (i, f) in schema.fields().iter().enumerate() {
            if let Some((_, key)) = KEYS.iter().find(|(c, _)| c == f.name())
                && f.data_type() == &DataType::Utf8
            {
                keys.push(*key);
                columns.push(i);
            }
        }
        if keys.is_empty() {
            return Err(Error::config("meta: the job maps no identifier Meta takes"));
        }
        Ok(PayloadSchema { keys, columns })
    }

    /// The `payload` parameter for a batch.
    pub fn payload(&self, batch: &RecordBatch) -> String {
        let mut s = String::with_capacity(batch.num_rows() * self.keys.len() * 70 + 64);
        s.push_str("{\"schema\":[");
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "\"{k}\"");
        }
        s.push_str("],\"data\":[");
        let columns: Vec<_> = self
            .columns
            .iter()
            .map(|&c| batch.column(c).as_string::<i32>())
            .collect();
        for row in 0..batch.num_rows() {
            if row > 0 {
                s.push(',');
            }
            s.push('[');
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                // Unknown keys are sent as "".
                let v = if c.is_valid(row) { c.value(row) } else { "" };
                push_json_string(&mut s, v);
            }
            s.push(']');
        }
        // Individual keys, each normalized and hashed on its own.
        s.push_str("],\"is_raw\":true}");
        s
    }
}

fn push_json_string(s: &mut String, v: &str) {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        s.push('"');
        s.push_str(v);
        s.push('"');
    } else {
        s.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// The `session` parameter.
pub fn session(session_id: u64, batch_seq: u64, last: bool) -> String {
    format!("{{\"session_id\":{session_id},\"batch_seq\":{batch_seq},\"last_batch_flag\":{last}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;

    #[test]
    fn multi_key_payload_with_empty_strings_for_missing() {
        let batch = RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(vec![Some("aa"), None])) as ArrayRef,
            ),
            (
                "ad_user_data",
                Arc::new(arrow::array::BooleanArray::from(vec![true, false])) as ArrayRef,
            ),
            (
                "external_id",
                Arc::new(StringArray::from(vec![Some("id \"7\""), Some("8")])) as ArrayRef,
            ),
        ])
        .unwrap();
        let p = PayloadSchema::new(&batch.schema()).unwrap();
        assert_eq!(
            p.payload(&batch),
            r#"{"schema":["EMAIL","EXTERN_ID"],"data":[["aa","id \"7\""],["","8"]],"is_raw":true}"#
        );
        let v: serde_json::Value = serde_json::from_str(&p.payload(&batch)).unwrap();
        assert_eq!(v["data"][0][1], "id \"7\"");
        assert_eq!(
            session(5, 1, true),
            r#"{"session_id":5,"batch_seq":1,"last_batch_flag":true}"#
        );
    }
}
