//! Member batches to the Graph API's multi-key payload: `{"schema": [...], "data": [[...]]}`.

use crate::error::{Error, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};

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

    /// The `payload` parameter for a batch, as JSON.
    #[cfg(test)]
    pub fn payload(&self, batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.num_rows() * self.keys.len() * 70 + 64);
        self.write_payload(std::slice::from_ref(batch), &mut out);
        out
    }

    /// An upload's JSON body for a batch in parts (`batch::Parts`):
    /// `{"access_token":…,"session":{…},"payload":{…}}`. A JSON body rather than a form: the
    /// payload goes as it is, not percent-encoded, which for 10,000 rows of hashes is most of the
    /// cost of a request on both ends.
    pub fn upload_body(&self, parts: &[RecordBatch], session: &str, token: &str) -> Vec<u8> {
        let rows = crate::batch::num_rows(parts);
        let mut out = Vec::with_capacity(rows * self.keys.len() * 70 + 256);
        out.extend_from_slice(b"{\"access_token\":");
        crate::json::push_string(&mut out, token);
        out.extend_from_slice(b",\"session\":");
        out.extend_from_slice(session.as_bytes());
        out.extend_from_slice(b",\"payload\":");
        self.write_payload(parts, &mut out);
        out.push(b'}');
        out
    }

    fn write_payload(&self, parts: &[RecordBatch], s: &mut Vec<u8>) {
        s.extend_from_slice(b"{\"schema\":[");
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                s.push(b',');
            }
            crate::json::push_string(s, k);
        }
        s.extend_from_slice(b"],\"data\":[");
        let mut first = true;
        for batch in parts {
            // Each column checked for what needs escaping once, not value by value.
            let columns: Vec<_> = self
                .columns
                .iter()
                .map(|&c| {
                    let column = batch.column(c).as_string::<i32>();
                    (column, crate::json::is_plain_column(column))
                })
                .collect();
            for row in 0..batch.num_rows() {
                if !first {
                    s.push(b',');
                }
                first = false;
                s.push(b'[');
                for (i, (c, plain)) in columns.iter().enumerate() {
                    if i > 0 {
                        s.push(b',');
                    }
                    // Unknown keys are sent as "".
                    let v = if c.is_valid(row) { c.value(row) } else { "" };
                    crate::json::push_string_of(s, v, *plain);
                }
                s.push(b']');
            }
        }
        // Individual keys, each normalized and hashed on its own.
        s.extend_from_slice(b"],\"is_raw\":true}");
    }
}

/// The `session` parameter; `estimated_num_total` when the number of members is known.
pub fn session(session_id: u64, batch_seq: u64, last: bool, total: Option<u64>) -> String {
    match total {
        Some(n) => format!(
            "{{\"session_id\":{session_id},\"batch_seq\":{batch_seq},\"last_batch_flag\":{last},\"estimated_num_total\":{n}}}"
        ),
        None => format!(
            "{{\"session_id\":{session_id},\"batch_seq\":{batch_seq},\"last_batch_flag\":{last}}}"
        ),
    }
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
            String::from_utf8(p.payload(&batch)).unwrap(),
            r#"{"schema":["EMAIL","EXTERN_ID"],"data":[["aa","id \"7\""],["","8"]],"is_raw":true}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&p.payload(&batch)).unwrap();
        assert_eq!(v["data"][0][1], "id \"7\"");
        assert_eq!(
            session(5, 1, true, None),
            r#"{"session_id":5,"batch_seq":1,"last_batch_flag":true}"#
        );
        let session = session(5, 2, false, Some(20));
        let whole = p.upload_body(std::slice::from_ref(&batch), &session, "t\"k");
        assert_eq!(
            p.upload_body(&[batch.slice(0, 1), batch.slice(1, 1)], &session, "t\"k"),
            whole,
            "a batch in parts is sent as the batch"
        );
        let body: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(body["access_token"], "t\"k");
        assert_eq!(body["session"]["estimated_num_total"], 20);
        assert_eq!(body["payload"]["data"][1][1], "8");
    }
}
