//! JSON strings written straight into request bodies and canonical members. Most values are
//! hashes, which never need escaping; the test for that does not branch per byte, so it runs
//! over a 64-byte hash in a few instructions, and only other values go through `serde_json`.

/// Whether `v` can be written between quotes as it is.
pub fn is_plain(v: &str) -> bool {
    v.bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'))
}

/// Appends `v` as a JSON string.
pub fn push_string(out: &mut Vec<u8>, v: &str) {
    if is_plain(v) {
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, v);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_values_go_as_they_are_and_others_escaped() {
        let mut out = vec![];
        super::push_string(&mut out, "ab12");
        out.push(b',');
        super::push_string(&mut out, "a\"b\\c\n");
        assert_eq!(String::from_utf8(out).unwrap(), r#""ab12","a\"b\\c\n""#);
    }
}
