//! SHA-256 of several short messages at once with the x86 SHA extensions.
//!
//! Identifiers are short: an e-mail or a phone number fits in one 64-byte block. One SHA-256
//! compression is a chain of dependent `sha256rnds2` instructions, so a single message leaves
//! most of the SHA unit idle waiting on latency. Interleaving the rounds of `LANES` independent
//! messages keeps it busy. Messages longer than 55 bytes (two blocks) and CPUs without the
//! extensions go through the `sha2` crate instead.

/// Messages hashed together.
pub const LANES: usize = 4;

/// The longest message that fits one block with its padding.
pub const MAX_ONE_BLOCK: usize = 55;

/// Whether this CPU has the SHA extensions (checked once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("sha")
                && std::arch::is_x86_feature_detected!("sse4.1")
                && std::arch::is_x86_feature_detected!("ssse3")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// SHA-256 digests of `LANES` messages of at most `MAX_ONE_BLOCK` bytes each.
///
/// Panics if a message is longer or `available()` is false.
pub fn digest_lanes(messages: [&[u8]; LANES]) -> [[u8; 32]; LANES] {
    assert!(available(), "SHA extensions not available");
    let mut blocks = [[0u8; 64]; LANES];
    for (block, m) in blocks.iter_mut().zip(messages) {
        assert!(m.len() <= MAX_ONE_BLOCK);
        block[..m.len()].copy_from_slice(m);
        block[m.len()] = 0x80;
        block[56..].copy_from_slice(&((m.len() as u64) * 8).to_be_bytes());
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked the CPU features the function is compiled for.
    unsafe {
        x86::compress_lanes(&blocks)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// What `available` checked, held: its holder encodes digests as hex without asking again
/// (an atomic load and a branch for each of a run's tens of millions of digests).
#[derive(Clone, Copy)]
pub struct Checked(());

impl Checked {
    /// `Some` where this CPU has the SHA extensions (and SSSE3).
    pub fn get() -> Option<Checked> {
        available().then_some(Checked(()))
    }

    /// A digest as lowercase hex (SSSE3, 16 bytes a step).
    #[inline]
    pub fn hex(self, digest: &[u8; 32], out: &mut [u8; 64]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Checked` exists only where `available()` found SSSE3.
        unsafe {
            x86::hex(digest, out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no Checked without x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use core::arch::x86_64::*;

    const K32: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    /// Lowercase hex of a digest, 16 bytes at a time: each nibble looked up with one shuffle,
    /// in place of a call per digest into a general-purpose encoder.
    #[target_feature(enable = "sse2,ssse3")]
    pub(super) unsafe fn hex(digest: &[u8; 32], out: &mut [u8; 64]) {
        // SAFETY: the caller checked the CPU features; loads and stores stay within arrays.
        unsafe {
            let digits = _mm_loadu_si128(b"0123456789abcdef".as_ptr().cast());
            let low_nibble = _mm_set1_epi8(0x0f);
            for half in 0..2 {
                let bytes = _mm_loadu_si128(digest.as_ptr().add(16 * half).cast());
                let high = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibble);
                let low = _mm_and_si128(bytes, low_nibble);
                let high = _mm_shuffle_epi8(digits, high);
                let low = _mm_shuffle_epi8(digits, low);
                let p: *mut __m128i = out.as_mut_ptr().add(32 * half).cast();
                _mm_storeu_si128(p, _mm_unpacklo_epi8(high, low));
                _mm_storeu_si128(p.add(1), _mm_unpackhi_epi8(high, low));
            }
        }
    }

    /// Compresses one padded block per lane from the initial state; returns the digests.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_lanes(blocks: &[[u8; 64]; LANES]) -> [[u8; 32]; LANES] {
        // SAFETY: the caller checked the CPU features; loads and stores stay within arrays.
        unsafe {
            // State in the layout sha256rnds2 wants: ABEF and CDGH.
            let dcba = _mm_loadu_si128(H0.as_ptr().cast());
            let hgfe = _mm_loadu_si128(H0.as_ptr().add(4).cast());
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
            let abef0 = _mm_alignr_epi8(cdab, efgh, 8);
            let cdgh0 = _mm_blend_epi16(efgh, cdab, 0xF0);

            let mask = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
            let mut w = [[_mm_setzero_si128(); 4]; LANES];
            for (lane, block) in blocks.iter().enumerate() {
                let p: *const __m128i = block.as_ptr().cast();
                for (i, word) in w[lane].iter_mut().enumerate() {
                    *word = _mm_shuffle_epi8(_mm_loadu_si128(p.add(i)), mask);
                }
            }
            let mut abef = [abef0; LANES];
            let mut cdgh = [cdgh0; LANES];

            for r in 0..16 {
                let rk = _mm_loadu_si128(K32.as_ptr().add(4 * r).cast());
                // The lanes' rounds are independent: issuing them side by side hides latency.
                for lane in 0..LANES {
                    let i = r % 4;
                    if r >= 4 {
                        let w0 = w[lane][i];
                        let w1 = w[lane][(i + 1) % 4];
                        let w2 = w[lane][(i + 2) % 4];
                        let w3 = w[lane][(i + 3) % 4];
                        let t1 = _mm_sha256msg1_epu32(w0, w1);
                        let t2 = _mm_alignr_epi8(w3, w2, 4);
                        w[lane][i] = _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), w3);
                    }
                    let t1 = _mm_add_epi32(w[lane][i], rk);
                    cdgh[lane] = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], t1);
                    let t2 = _mm_shuffle_epi32(t1, 0x0E);
                    abef[lane] = _mm_sha256rnds2_epu32(abef[lane], cdgh[lane], t2);
                }
            }

            let bswap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
            let mut out = [[0u8; 32]; LANES];
            for lane in 0..LANES {
                let abef = _mm_add_epi32(abef[lane], abef0);
                let cdgh = _mm_add_epi32(cdgh[lane], cdgh0);
                let feba = _mm_shuffle_epi32(abef, 0x1B);
                let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
                let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
                let hgef = _mm_alignr_epi8(dchg, feba, 8);
                // State words are big-endian in the digest.
                let p: *mut __m128i = out[lane].as_mut_ptr().cast();
                _mm_storeu_si128(p, _mm_shuffle_epi8(dcba, bswap));
                _mm_storeu_si128(p.add(1), _mm_shuffle_epi8(hgef, bswap));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn matches_sha2_for_every_one_block_length() {
        if !available() {
            return;
        }
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=MAX_ONE_BLOCK {
            let msgs: [&[u8]; LANES] = std::array::from_fn(|lane| &data[lane..lane + len]);
            let got = digest_lanes(msgs);
            for lane in 0..LANES {
                let want: [u8; 32] = Sha256::digest(msgs[lane]).into();
                assert_eq!(got[lane], want, "len {len} lane {lane}");
                let want_hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
                let mut hex_digits = [0u8; 64];
                Checked::get().unwrap().hex(&got[lane], &mut hex_digits);
                assert_eq!(&hex_digits, want_hex.as_bytes());
            }
        }
    }
}
