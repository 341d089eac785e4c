//! Member batches to TikTok's customer files (one hash per line, no header), the files' MD5
//! signature, and the multipart body of `file/upload/` (written here: the HTTP client is built
//! without its multipart feature, and the body is three text fields and one file).

use crate::destinations::ids::IdColumn;
use arrow::array::RecordBatch;
use bytes::Bytes;
use md5::{Digest, Md5};
use std::collections::HashSet;

/// A batch as a file.
pub struct MemberFile {
    pub bytes: Bytes,
    pub lines: u64,
    /// Members without the file's identifier (not in the file).
    pub without_identifier: u64,
}

/// One line per distinct hash of the batch's members (two members may share an e-mail).
pub fn member_file(column: &IdColumn, batch: &RecordBatch) -> MemberFile {
    let mut bytes = Vec::with_capacity(batch.num_rows() * super::LINE_BYTES);
    let mut seen = HashSet::with_capacity(batch.num_rows());
    let mut with_identifier = 0u64;
    column.each_hash(batch, |_, hash| {
        with_identifier += 1;
        if seen.insert(hash.to_string()) {
            bytes.extend_from_slice(hash.as_bytes());
            bytes.push(b'\n');
        }
    });
    MemberFile {
        lines: seen.len() as u64,
        without_identifier: batch.num_rows() as u64 - with_identifier,
        bytes: bytes.into(),
    }
}

/// The `file_signature`: MD5 of the file's bytes, lowercase hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    let mut out = [0u8; 32];
    let _ = faster_hex::hex_encode(&Md5::digest(bytes), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A `multipart/form-data` body: text fields, then one file.
pub struct Multipart {
    pub content_type: String,
    pub body: Bytes,
}

/// The body of `file/upload/`. The boundary holds characters a file of hex lines cannot.
pub fn multipart(fields: &[(&str, &str)], file_name: &str, file: &[u8]) -> Multipart {
    let boundary = format!("activator-boundary-{:016x}", boundary_seed(file));
    let mut body = Vec::with_capacity(file.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: text/plain\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Multipart {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        body: body.into(),
    }
}

fn boundary_seed(file: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::RandomState::default().build_hasher();
    h.write_usize(file.len());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::ids::IdKind;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;

    #[test]
    fn md5_matches_rfc_1321_test_vectors() {
        let vectors = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, expected) in vectors {
            assert_eq!(md5_hex(input.as_bytes()), expected, "MD5(\"{input}\")");
        }
    }

    #[test]
    fn files_hold_each_hash_once_and_skip_members_without_one() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let batch = RecordBatch::try_from_iter([(
            "email_sha256",
            Arc::new(StringArray::from(vec![
                Some(a.as_str()),
                None,
                Some(&b),
                Some(&a),
            ])) as ArrayRef,
        )])
        .unwrap();
        let column = IdColumn::find(&batch.schema(), IdKind::Email).unwrap();
        let file = member_file(&column, &batch);
        assert_eq!(file.bytes, format!("{a}\n{b}\n").into_bytes());
        assert_eq!((file.lines, file.without_identifier), (2, 1));
    }

    #[test]
    fn multipart_body_frames_fields_and_the_file() {
        let m = multipart(&[("advertiser_id", "7")], "f.txt", b"x\n");
        let boundary = m.content_type.split("boundary=").nth(1).unwrap();
        let body = String::from_utf8(m.body.to_vec()).unwrap();
        assert!(body.starts_with(&format!("--{boundary}\r\n")), "{body}");
        assert!(
            body.contains("name=\"advertiser_id\"\r\n\r\n7\r\n"),
            "{body}"
        );
        assert!(body.contains("filename=\"f.txt\""), "{body}");
        assert!(
            body.ends_with(&format!("\r\nx\n\r\n--{boundary}--\r\n")),
            "{body}"
        );
    }
}
