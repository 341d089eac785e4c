//! Hash columns of members files kept as their 32 bytes rather than as text. A SHA-256 in hex
//! is 64 characters, so this halves the members files a run writes locally and keeps in its
//! state (for B1's 5.2 million members of four hashes, ~1.5 GB became ~0.8 GB). Each stored
//! column's field says how its text was encoded, and readers give the same text back, so
//! destinations see what was written. Columns without the mark (files of earlier builds, and
//! columns that are not hashes) are read as they are. A run on this machine takes the bytes
//! from the transform, which has them before it writes the text (`with_digests`); text from
//! elsewhere (a cluster's executors) is decoded (`to_stored`).

use crate::error::{Error, Result};
use crate::identity::hash::{decode_lowercase_hex, spread_to_rows};
use crate::identity::profile::Encoding;
use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;

/// Field metadata of a hash column stored as bytes: the encoding of its text.
const TEXT_ENCODING: &str = "activator.text_encoding";
const DIGEST_BYTES: usize = 32;

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Hex => "hex",
        Encoding::Base64 => "base64",
    }
}

/// How a stored field's text is encoded, if it is a hash column stored as bytes.
fn stored_encoding(field: &Field) -> Option<Encoding> {
    if field.data_type() != &DataType::FixedSizeBinary(DIGEST_BYTES as i32) {
        return None;
    }
    match field.metadata().get(TEXT_ENCODING).map(String::as_str) {
        Some("hex") => Some(Encoding::Hex),
        Some("base64") => Some(Encoding::Base64),
        _ => None,
    }
}

/// The schema members files keep `schema` in: the text columns named in `hashes` (hashes in
/// `encoding`) as 32 bytes each.
pub fn stored_schema(schema: &SchemaRef, hashes: &[String], encoding: Encoding) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if hashes.contains(f.name()) && f.data_type() == &DataType::Utf8 {
                Field::new(
                    f.name(),
                    DataType::FixedSizeBinary(DIGEST_BYTES as i32),
                    f.is_nullable(),
                )
                .with_metadata(HashMap::from([(
                    TEXT_ENCODING.to_string(),
                    encoding_name(encoding).to_string(),
                )]))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The schema a stored schema is read back as: hash columns as text again.
pub fn text_schema(stored: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = stored
        .fields()
        .iter()
        .map(|f| match stored_encoding(f) {
            Some(_) => Field::new(f.name(), DataType::Utf8, f.is_nullable()),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone()))
}

/// `batch` (of the text schema) in the stored schema `stored`.
pub fn to_stored(batch: &RecordBatch, stored: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(stored.fields())
        .map(|(column, field)| match stored_encoding(field) {
            Some(encoding) => {
                let text = column.as_string_opt::<i32>().ok_or_else(|| {
                    Error::internal(format!("members column {} is not Utf8 text", field.name()))
                })?;
                to_bytes(text, encoding, field.name())
            }
            None => Ok(column.clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(stored.clone(), columns)?)
}

/// `batch` (of the text schema) in the stored schema `stored`, with the hash columns' bytes
/// given: `digests`, one for each column `stored` keeps as bytes, in order (as
/// `MemberBatch::digests` carries them). Nothing is decoded.
pub fn with_digests(
    batch: &RecordBatch,
    stored: &SchemaRef,
    digests: &[ArrayRef],
) -> Result<RecordBatch> {
    let mut digests = digests.iter();
    let columns = batch
        .columns()
        .iter()
        .zip(stored.fields())
        .map(|(column, field)| match stored_encoding(field) {
            Some(_) => digests.next().cloned().ok_or_else(|| {
                Error::internal(format!(
                    "no digests came for members column {}",
                    field.name()
                ))
            }),
            None => Ok(column.clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    if digests.next().is_some() {
        return Err(Error::internal(
            "more digest columns came than members files keep",
        ));
    }
    // `try_new` checks each column's type and length against the stored schema.
    Ok(RecordBatch::try_new(stored.clone(), columns)?)
}

/// A stored `batch` with its hash columns as text again.
pub fn to_text(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| stored_encoding(f).is_some()) {
        return Ok(batch.clone());
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| match stored_encoding(field) {
            Some(encoding) => to_string(column.as_fixed_size_binary(), encoding),
            None => Ok(column.clone()),
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(text_schema(&schema), columns)?)
}

/// Decodes each hash. A value that is not a hash in `encoding` written as this build writes
/// one (lowercase hex, padded Base64) would not read back the same: that is an error.
fn to_bytes(text: &StringArray, encoding: Encoding, column: &str) -> Result<ArrayRef> {
    let not_hashes = || {
        // Only the column: the value may be anything a segment produced.
        Error::internal(format!(
            "members column {column} holds a value that is not a SHA-256 in {}",
            encoding_name(encoding)
        ))
    };
    let mut bytes = vec![0u8; text.len() * DIGEST_BYTES];
    if encoding == Encoding::Hex && decode_hex_at_once(text, &mut bytes).ok_or_else(not_hashes)? {
        return digest_array(bytes, text);
    }
    for (i, out) in bytes.chunks_exact_mut(DIGEST_BYTES).enumerate() {
        if text.is_null(i) {
            continue;
        }
        let v = text.value(i).as_bytes();
        let exact = match encoding {
            Encoding::Hex => v.len() == 2 * DIGEST_BYTES && decode_lowercase_hex(v, out),
            Encoding::Base64 => {
                v.len() == 44
                    && base64::engine::general_purpose::STANDARD.decode_slice(v, out)
                        == Ok(DIGEST_BYTES)
            }
        };
        if !exact {
            return Err(not_hashes());
        }
    }
    digest_array(bytes, text)
}

/// Decodes a column of hex hashes in one call where every value is 64 digits and every null
/// empty, as this build writes them: the digits lie back to back. (A call per value cost
/// about half a second of CPU for 5 million members of four hashes.) `Some(false)` where the
/// column is not in that shape; `None` where its digits are not lowercase hex. The shape check
/// folds without a branch per row, and nulls need no second buffer: with a branch and a buffer,
/// the work around the decoding was 28% of its samples in a Meta upload of B1, now 18%.
fn decode_hex_at_once(text: &StringArray, bytes: &mut [u8]) -> Option<bool> {
    let offsets = text.value_offsets();
    let width = 2 * DIGEST_BYTES as i32;
    let lengths = offsets.windows(2).map(|w| w[1] - w[0]);
    // A null slot may hold bytes (as `nullif` leaves them): then the digits are not back to back.
    let shaped = match text.nulls() {
        None => lengths.fold(true, |ok, len| ok & (len == width)),
        Some(nulls) => lengths
            .zip(nulls.iter())
            .fold(true, |ok, (len, valid)| ok & (len == width * valid as i32)),
    };
    if !shaped {
        return Some(false);
    }
    let digits = &text.value_data()[offsets[0] as usize..offsets[text.len()] as usize];
    let valid = text.len() - text.null_count();
    if !decode_lowercase_hex(digits, &mut bytes[..valid * DIGEST_BYTES]) {
        return None;
    }
    if let Some(nulls) = text.nulls().filter(|_| valid < text.len()) {
        spread_to_rows(bytes, valid, nulls);
    }
    Some(true)
}

fn digest_array(bytes: Vec<u8>, text: &StringArray) -> Result<ArrayRef> {
    let array = FixedSizeBinaryArray::try_new(
        DIGEST_BYTES as i32,
        Buffer::from_vec(bytes),
        text.nulls().cloned(),
    )?;
    Ok(Arc::new(array))
}

/// Encodes each hash as text again (nulls stay null, with no text).
fn to_string(digests: &FixedSizeBinaryArray, encoding: Encoding) -> Result<ArrayRef> {
    let width = match encoding {
        Encoding::Hex => 2 * DIGEST_BYTES,
        Encoding::Base64 => 44,
    };
    let valid = digests.len() - digests.null_count();
    let mut data = vec![0u8; valid * width];
    let mut lengths = Vec::with_capacity(digests.len());
    let mut at = 0;
    for i in 0..digests.len() {
        if digests.is_null(i) {
            lengths.push(0);
            continue;
        }
        let out = &mut data[at..at + width];
        match encoding {
            Encoding::Hex => {
                faster_hex::hex_encode(digests.value(i), out).expect("room for 64 digits");
            }
            Encoding::Base64 => {
                base64::engine::general_purpose::STANDARD
                    .encode_slice(digests.value(i), out)
                    .expect("room for 44 characters");
            }
        }
        at += width;
        lengths.push(width);
    }
    // Hex and Base64 are ASCII, so the text is UTF-8 (which `try_new` checks).
    Ok(Arc::new(StringArray::try_new(
        OffsetBuffer::from_lengths(lengths),
        Buffer::from_vec(data),
        digests.nulls().cloned(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(email: Vec<Option<&str>>, zip: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter_with_nullable(vec![
            (
                "email_sha256",
                Arc::new(StringArray::from(email)) as ArrayRef,
                true,
            ),
            ("zip", Arc::new(StringArray::from(zip)) as ArrayRef, true),
        ])
        .unwrap()
    }

    #[test]
    fn hashes_are_stored_as_32_bytes_and_read_back_as_the_same_text() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let base64 = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";
        for (encoding, value) in [(Encoding::Hex, hex), (Encoding::Base64, base64)] {
            let text = batch(vec![Some(value), None], vec![Some("94105"), Some("10001")]);
            let stored_schema =
                stored_schema(&text.schema(), &["email_sha256".to_string()], encoding);
            let stored = to_stored(&text, &stored_schema).unwrap();
            assert_eq!(stored.column(0).data_type(), &DataType::FixedSizeBinary(32));
            assert_eq!(
                stored.column(1).data_type(),
                &DataType::Utf8,
                "zip stays text"
            );
            assert_eq!(to_text(&stored).unwrap(), text);
            assert_eq!(text_schema(&stored_schema), text.schema());
        }
    }

    #[test]
    fn a_value_that_would_not_read_back_the_same_is_an_error_naming_the_column_only() {
        let upper = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        for (encoding, value) in [
            (Encoding::Hex, upper),
            (Encoding::Hex, "someone@example.com"),
            (
                Encoding::Base64,
                "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg",
            ),
        ] {
            let text = batch(vec![Some(value)], vec![None]);
            let schema = stored_schema(&text.schema(), &["email_sha256".to_string()], encoding);
            let error = to_stored(&text, &schema).unwrap_err().to_string();
            assert!(error.contains("email_sha256"), "{error}");
            assert!(!error.contains(value), "{error}");
        }
    }

    #[test]
    fn columns_of_many_hashes_with_and_without_nulls_read_back_the_same() {
        let hashes: Vec<String> = (0..100u32).map(|i| format!("{i:064x}")).collect();
        let schema_of = |b: &RecordBatch| {
            stored_schema(&b.schema(), &["email_sha256".to_string()], Encoding::Hex)
        };
        for nulls_every in [0, 3, 1] {
            let email: Vec<Option<&str>> = hashes
                .iter()
                .enumerate()
                .map(|(i, h)| (nulls_every == 0 || i % nulls_every != 0).then_some(h.as_str()))
                .collect();
            let text = batch(email, vec![None; 100]);
            let stored = to_stored(&text, &schema_of(&text)).unwrap();
            assert_eq!(to_text(&stored).unwrap(), text, "nulls every {nulls_every}");
            // The bytes of null slots are zero: a members file does not depend on them.
            let digests = stored.column(0).as_fixed_size_binary();
            for i in (0..100).filter(|&i| digests.is_null(i)) {
                assert_eq!(digests.value(i), [0u8; 32], "null row {i}");
            }
        }
        // One value in capitals, one a digit short: errors as a value at a time.
        let mut upper = hashes.clone();
        upper[50] = upper[50].to_uppercase().replace("0", "A");
        let mut short = hashes.clone();
        short[7].pop();
        for bad in [upper, short] {
            let text = batch(
                bad.iter().map(|h| Some(h.as_str())).collect(),
                vec![None; 100],
            );
            assert!(to_stored(&text, &schema_of(&text)).is_err());
        }
    }

    #[test]
    fn sliced_columns_and_null_slots_that_hold_bytes_read_back_the_same() {
        let hashes: Vec<String> = (0..20u32).map(|i| format!("{i:064x}")).collect();
        let text = batch(
            hashes.iter().map(|h| Some(h.as_str())).collect(),
            vec![None; 20],
        );
        let schema = stored_schema(&text.schema(), &["email_sha256".to_string()], Encoding::Hex);
        let sliced = text.slice(5, 10);
        assert_eq!(
            to_text(&to_stored(&sliced, &schema).unwrap()).unwrap(),
            sliced
        );
        // Nulls over values, their 64 digits left in place.
        let mask =
            arrow::array::BooleanArray::from((0..20).map(|i| i % 4 == 1).collect::<Vec<_>>());
        let email = arrow::compute::nullif(text.column(0), &mask).unwrap();
        let nulled =
            RecordBatch::try_new(text.schema(), vec![email, text.column(1).clone()]).unwrap();
        let back = to_text(&to_stored(&nulled, &schema).unwrap()).unwrap();
        let (back, nulled) = (
            back.column(0).as_string::<i32>(),
            nulled.column(0).as_string::<i32>(),
        );
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            nulled.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn digests_given_as_bytes_are_stored_as_decoded_ones_would_be() {
        let hashes: Vec<String> = (0..10u32).map(|i| format!("{i:064x}")).collect();
        let text = batch(
            hashes.iter().map(|h| Some(h.as_str())).collect(),
            vec![Some("94105"); 10],
        );
        let schema = stored_schema(&text.schema(), &["email_sha256".to_string()], Encoding::Hex);
        let decoded = to_stored(&text, &schema).unwrap();
        let given = with_digests(&text, &schema, &[decoded.column(0).clone()]).unwrap();
        assert_eq!(given, decoded);
        // Too few or too many digest columns, or digests of other rows, are errors.
        assert!(with_digests(&text, &schema, &[]).is_err());
        let twice = [decoded.column(0).clone(), decoded.column(0).clone()];
        assert!(with_digests(&text, &schema, &twice).is_err());
        assert!(with_digests(&text, &schema, &[decoded.column(0).slice(0, 5)]).is_err());
    }

    #[test]
    fn batches_without_stored_hashes_are_read_as_they_are() {
        let text = batch(vec![Some("x")], vec![Some("94105")]);
        assert_eq!(to_text(&text).unwrap(), text);
    }
}
