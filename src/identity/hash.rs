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
///
/// With `raw`, each digest's 32 bytes go there too, at the same place among the digests: the
/// value whose text is at `offset` has its bytes at `offset / encoded_len * 32` (members files
/// keep them: `state::digests`).
pub fn hash_many_into(
    values: &[(usize, &[u8])],
    encoding: Encoding,
    out: &mut [u8],
    raw: Option<&mut [u8]>,
) {
    use super::sha256x::{Checked, LANES, MAX_ONE_BLOCK, available, digest_lanes};
    let mut digests = Digests {
        out,
        raw,
        encoding,
        width: encoded_len(encoding),
        hex: Checked::get().filter(|_| encoding == Encoding::Hex),
    };
    if !available() {
        for (offset, v) in values {
            digests.put(&sha256(v), *offset);
        }
        return;
    }
    let mut lane_offsets = [0usize; LANES];
    let mut lane_values: [&[u8]; LANES] = [&[]; LANES];
    let mut filled = 0;
    for &(offset, v) in values {
        if v.len() > MAX_ONE_BLOCK {
            digests.put(&sha256(v), offset);
            continue;
        }
        lane_offsets[filled] = offset;
        lane_values[filled] = v;
        filled += 1;
        if filled == LANES {
            for (d, o) in digest_lanes(lane_values).iter().zip(lane_offsets) {
                digests.put(d, o);
            }
            filled = 0;
        }
    }
    for i in 0..filled {
        digests.put(&sha256(lane_values[i]), lane_offsets[i]);
    }
}

/// Where `hash_many_into` writes digests: as text, and as bytes if `raw`.
struct Digests<'a> {
    out: &'a mut [u8],
    raw: Option<&'a mut [u8]>,
    encoding: Encoding,
    width: usize,
    /// Set for hex where the CPU has SSSE3: 64 digits in a few vector steps.
    hex: Option<super::sha256x::Checked>,
}

impl Digests<'_> {
    /// Inlined: called once per digest (as a closure it was not, and took half a percent of
    /// B1's samples more).
    #[inline(always)]
    fn put(&mut self, digest: &[u8; 32], offset: usize) {
        match self.hex {
            Some(checked) => {
                let dest = &mut self.out[offset..offset + 64];
                checked.hex(digest, dest.try_into().expect("64 digits"));
            }
            None => encode_digest(digest, self.encoding, &mut self.out[offset..][..self.width]),
        }
        if let Some(raw) = self.raw.as_deref_mut() {
            let at = offset / self.width * 32;
            raw[at..at + 32].copy_from_slice(digest);
        }
    }
}

/// Moves the `valid` digests packed at the front of `bytes` (32 bytes each) to their rows'
/// slots, the rows being those `nulls` says are valid, and zeroes the slots of null rows. The
/// last goes first: a row's slot never lies before its packed place.
pub fn spread_to_rows(bytes: &mut [u8], valid: usize, nulls: &arrow::buffer::NullBuffer) {
    let mut packed = valid;
    for i in (0..nulls.len()).rev() {
        let slot = i * 32..(i + 1) * 32;
        if nulls.is_valid(i) {
            packed -= 1;
            bytes.copy_within(packed * 32..(packed + 1) * 32, slot.start);
        } else {
            bytes[slot].fill(0);
        }
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

/// Decodes `digits` into `out` (half as long) if they are all lowercase hex, and says whether
/// they were: hex decoding takes either case, and only lowercase reads back the same as this
/// build writes it. Checking and decoding are one pass without a branch per byte, 64 digits at a
/// time, which the compiler turns into vector code. On 1.3 GB of digits (B1's members) alone,
/// 0.25 s here against 0.37 s for a check pass and then faster_hex's SIMD decode; in a whole
/// Meta upload of B1, where the digits come from memory, 0.46 s against 0.51 s (with the
/// column shape check of `state/digests.rs`). An AVX2 version by hand took 0.20 s alone: not
/// worth the `unsafe`.
pub fn decode_lowercase_hex(digits: &[u8], out: &mut [u8]) -> bool {
    if digits.len() != 2 * out.len() {
        return false;
    }
    // A digit's value, or 0x80 (which no digit has) for any other byte.
    let nibble = |b: u8| {
        let (digit, letter) = (b.wrapping_sub(b'0'), b.wrapping_sub(b'a'));
        if digit < 10 {
            digit
        } else if letter < 6 {
            letter + 10
        } else {
            0x80
        }
    };
    let mut seen = 0u8;
    let mut decode = |pair: &[u8], o: &mut u8| {
        let (high, low) = (nibble(pair[0]), nibble(pair[1]));
        seen |= high | low;
        *o = (high << 4) | (low & 0x0f);
    };
    let mut ins = digits.chunks_exact(64);
    let mut outs = out.chunks_exact_mut(32);
    for (i, o) in (&mut ins).zip(&mut outs) {
        // Fixed lengths: the compiler unrolls and vectorizes this.
        for (pair, o) in i.chunks_exact(2).zip(o.iter_mut()) {
            decode(pair, o);
        }
    }
    for (pair, o) in ins.remainder().chunks_exact(2).zip(outs.into_remainder()) {
        decode(pair, o);
    }
    seen & 0x80 == 0
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
    fn only_lowercase_hex_digits_decode() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let mut out = [0u8; 32];
        assert!(decode_lowercase_hex(hex.as_bytes(), &mut out));
        assert_eq!(faster_hex::hex_string(&out), hex);
        // Every byte but the 16 digits, at the start, middle and end of a value (the bytes
        // around '0'-'9' and 'a'-'f' among them).
        for b in (0..=255u8).filter(|b| !b"0123456789abcdef".contains(b)) {
            for at in [0, 33, 63] {
                let mut bad = hex.as_bytes().to_vec();
                bad[at] = b;
                assert!(!decode_lowercase_hex(&bad, &mut out), "byte {b} at {at}");
            }
        }
        assert!(
            !decode_lowercase_hex(&hex.as_bytes()[..62], &mut out),
            "too short"
        );
    }

    #[test]
    fn runs_of_digits_of_any_length_decode_and_are_checked_to_the_end() {
        // 3.5 hashes: whole blocks of 64 digits, then a remainder.
        let digits: Vec<u8> = (0..224).map(|i| b"0123456789abcdef"[i * 7 % 16]).collect();
        let mut out = [0u8; 112];
        assert!(decode_lowercase_hex(&digits, &mut out));
        assert_eq!(faster_hex::hex_string(&out).as_bytes(), &digits[..]);
        for at in [0, 65, 127, 128, 190, 223] {
            for b in [b'A', b'g', b'/', b':', b'`', 0xff] {
                let mut bad = digits.clone();
                bad[at] = b;
                assert!(!decode_lowercase_hex(&bad, &mut out), "byte {b} at {at}");
            }
        }
        assert!(decode_lowercase_hex(&[], &mut []), "nothing to decode");
    }

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
            let mut raw = vec![0u8; owned.len() * 32];
            hash_many_into(&values, encoding, &mut out, Some(&mut raw));
            for (i, v) in owned.iter().enumerate() {
                assert_eq!(
                    &out[i * width..(i + 1) * width],
                    hash_to_string(v, encoding).as_bytes()
                );
                assert_eq!(&raw[i * 32..(i + 1) * 32], sha256(v.as_bytes()));
            }
            let mut without = vec![0u8; owned.len() * width];
            hash_many_into(&values, encoding, &mut without, None);
            assert_eq!(without, out);
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
