//! SHA-256 over many short values, and the encodings platforms want.
//!
//! Values come packed in one buffer with end offsets (the way `column.rs` collects them), so the
//! kernel runs a tight loop over contiguous memory and writes digests straight into the output
//! column's buffer: no allocation per value. `sha2` picks the CPU's SHA extensions at run time.

use super::profile::Encoding;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Width of one encoded digest.
pub fn encoded_len(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Hex => 64,
        Encoding::Base64 => 44,
    }
}

/// SHA-256 of one value.
pub fn sha256(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

/// Writes the encoded SHA-256 of `value` into `out` (exactly `encoded_len` bytes).
pub fn hash_into(value: &[u8], encoding: Encoding, out: &mut [u8]) {
    let digest = sha256(value);
    encode_digest(&digest, encoding, out);
}

/// Encodes a 32-byte digest into `out` (exactly `encoded_len` bytes).
pub fn encode_digest(digest: &[u8; 32], encoding: Encoding, out: &mut [u8]) {
    match encoding {
        Encoding::Hex => {
            // Lowercase hex; faster-hex uses SIMD where the CPU has it.
            let _ = faster_hex::hex_encode(digest, out);
        }
        Encoding::Base64 => {
            let _ = base64::engine::general_purpose::STANDARD.encode_slice(digest, out);
        }
    }
}

/// Hashes many values, writing each encoded digest at its offset in `out`. Short values go
/// through the interleaved SHA-NI kernel `LANES` at a time; the rest one by one through `sha2`.
pub fn hash_many_into(values: &[(usize, &[u8])], encoding: Encoding, out: &mut [u8]) {
    use super::sha256x::{LANES, MAX_ONE_BLOCK, available, digest_lanes, hex_lanes};
    let width = encoded_len(encoding);
    if !available() {
        for (offset, v) in values {
            hash_into(v, encoding, &mut out[*offset..*offset + width]);
        }
        return;
    }
    let mut lane_offsets = [0usize; LANES];
    let mut lane_values: [&[u8]; LANES] = [&[]; LANES];
    let mut filled = 0;
    for &(offset, v) in values {
        if v.len() > MAX_ONE_BLOCK {
            hash_into(v, encoding, &mut out[offset..offset + width]);
            continue;
        }
        lane_offsets[filled] = offset;
        lane_values[filled] = v;
        filled += 1;
        if filled == LANES {
            if encoding == Encoding::Hex {
                hex_lanes(lane_values, out, lane_offsets);
            } else {
                let digests = digest_lanes(lane_values);
                for (d, o) in digests.iter().zip(lane_offsets) {
                    encode_digest(d, encoding, &mut out[o..o + width]);
                }
            }
            filled = 0;
        }
    }
    for i in 0..filled {
        let o = lane_offsets[i];
        hash_into(lane_values[i], encoding, &mut out[o..o + width]);
    }
}

/// Re-encodes a pre-hashed 64-hex value (already lowercase) for the profile: hex stays, Base64
/// gets the 32 raw bytes.
pub fn reencode_hex(hex: &[u8], encoding: Encoding, out: &mut [u8]) {
    match encoding {
        Encoding::Hex => out.copy_from_slice(hex),
        Encoding::Base64 => {
            let mut raw = [0u8; 32];
            let _ = faster_hex::hex_decode(hex, &mut raw);
            encode_digest(&raw, encoding, out);
        }
    }
}

/// Returns the encoded digests of a string as text (for the `hash` command and tests).
pub fn hash_to_string(value: &str, encoding: Encoding) -> String {
    let mut out = vec![0u8; encoded_len(encoding)];
    hash_into(value.as_bytes(), encoding, &mut out);
    String::from_utf8(out).expect("hex and base64 are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // echo -n "test@example.com" | sha256sum
        assert_eq!(
            hash_to_string("test@example.com", Encoding::Hex),
            "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
        );
        // The UID2 docs' example: validate@example.com -> Base64 of the digest.
        assert_eq!(
            hash_to_string("validate@example.com", Encoding::Base64),
            "ntI244ZRTXwAwpki6/M5cyBYW7h/Wq576lnN3l9+W/c="
        );
    }

    #[test]
    fn many_at_once_equals_one_at_a_time() {
        let owned: Vec<String> = (0..103)
            .map(|i| "x".repeat(i % 70) + &i.to_string())
            .collect();
        for encoding in [Encoding::Hex, Encoding::Base64] {
            let width = encoded_len(encoding);
            let values: Vec<(usize, &[u8])> = owned
                .iter()
                .enumerate()
                .map(|(i, v)| (i * width, v.as_bytes()))
                .collect();
            let mut out = vec![0u8; owned.len() * width];
            hash_many_into(&values, encoding, &mut out);
            for (i, v) in owned.iter().enumerate() {
                assert_eq!(
                    &out[i * width..(i + 1) * width],
                    hash_to_string(v, encoding).as_bytes()
                );
            }
        }
    }

    #[test]
    fn pre_hashed_hex_becomes_base64() {
        let hex = hash_to_string("validate@example.com", Encoding::Hex);
        let mut out = [0u8; 44];
        reencode_hex(hex.as_bytes(), Encoding::Base64, &mut out);
        assert_eq!(&out, b"ntI244ZRTXwAwpki6/M5cyBYW7h/Wq576lnN3l9+W/c=");
    }
}
