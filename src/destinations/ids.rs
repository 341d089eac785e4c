//! Single-key identifiers as TikTok and Snap take them: SHA-256 in lowercase hex, one kind per
//! list. E-mail and phone hashes are the `meta` profile's columns as they are; the mobile ad id,
//! which that profile keeps raw (Meta wants it so), is hashed here, since TikTok and Snap want
//! it hashed (shared/spec/identifiers.md: "TikTok and Snap: hashed").

use crate::identity::{Encoding, hash};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};

/// An identifier kind a single-key platform takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Email,
    Phone,
    MobileAdId,
}

impl IdKind {
    /// The member column that carries it.
    pub fn column(self) -> &'static str {
        match self {
            IdKind::Email => "email_sha256",
            IdKind::Phone => "phone_sha256",
            IdKind::MobileAdId => "mobile_ad_id",
        }
    }

    /// The job's identifier kind (`identifiers.<kind>`).
    pub fn kind(self) -> crate::identity::Kind {
        match self {
            IdKind::Email => crate::identity::Kind::Email,
            IdKind::Phone => crate::identity::Kind::Phone,
            IdKind::MobileAdId => crate::identity::Kind::MobileAdId,
        }
    }
}

/// Where one kind's values are in a member batch, and whether they still need hashing.
#[derive(Clone, Debug)]
pub struct IdColumn {
    pub kind: IdKind,
    index: usize,
    hash_here: bool,
}

impl IdColumn {
    /// The kind's column in `schema`, if the job maps it.
    pub fn find(schema: &SchemaRef, kind: IdKind) -> Option<IdColumn> {
        let index = schema
            .index_of(kind.column())
            .ok()
            .filter(|&i| schema.field(i).data_type() == &DataType::Utf8)?;
        Some(IdColumn {
            kind,
            index,
            hash_here: kind == IdKind::MobileAdId,
        })
    }

    /// Calls `f` with each row's SHA-256 hex, for the rows that have the identifier.
    pub fn each_hash(&self, batch: &RecordBatch, mut f: impl FnMut(usize, &str)) {
        let column = batch.column(self.index).as_string::<i32>();
        let mut digest = [0u8; 64];
        for row in 0..batch.num_rows() {
            if !column.is_valid(row) {
                continue;
            }
            let value = column.value(row);
            if self.hash_here {
                hash::hash_into(value.as_bytes(), Encoding::Hex, &mut digest);
                f(row, std::str::from_utf8(&digest).expect("hex is ASCII"));
            } else {
                f(row, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;

    #[test]
    fn hashes_the_raw_mobile_ad_id_and_passes_hashes_through() {
        let maid = "6d92078a-8246-4ba4-ae5b-76104861e7dc";
        let batch = RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(vec![Some("ab".repeat(32)), None])) as ArrayRef,
            ),
            (
                "mobile_ad_id",
                Arc::new(StringArray::from(vec![None, Some(maid)])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut seen = vec![];
        let email = IdColumn::find(&batch.schema(), IdKind::Email).unwrap();
        email.each_hash(&batch, |row, h| seen.push((row, h.to_string())));
        let maid_column = IdColumn::find(&batch.schema(), IdKind::MobileAdId).unwrap();
        maid_column.each_hash(&batch, |row, h| seen.push((row, h.to_string())));
        assert_eq!(
            seen,
            [
                (0, "ab".repeat(32)),
                (1, hash::hash_to_string(maid, Encoding::Hex))
            ]
        );
        assert!(IdColumn::find(&batch.schema(), IdKind::Phone).is_none());
    }
}
