//! A reader of JSON request bodies in the shape clients write them, for the emulators' large
//! uploads: strings without escapes are borrowed where they lie, found 32 (or 16) bytes at a time,
//! and any other value is read by `serde_json` from where the reader stands. Every reading
//! function returns `None` where the body is not in a shape it takes, and the emulator then
//! leaves the whole body to its serde reader, which decides it. (serde's visitors, one layer per
//! level of a member, were about half of an emulator's time in a large upload.)

use crate::sandbox::Cell;
use serde_json::Value;
use std::borrow::Cow;

/// A position in the body. Every reading function returns `None` where the body is not in the
/// shape this reader takes.
pub(crate) struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Reader<'a> {
        Reader { text, at: 0 }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> usize {
        self.text.len() - self.at
    }

    /// Whether only white space is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_space();
        self.at == self.text.len()
    }

    /// The next byte after any white space, not taken.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        let bytes = self.text.as_bytes();
        while matches!(bytes.get(self.at), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    /// Takes the byte `c`, after any white space.
    fn eat(&mut self, c: u8) -> Option<()> {
        self.skip_space();
        if self.text.as_bytes().get(self.at) == Some(&c) {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    /// Takes a `null`, if one comes next. (What follows it is checked by whoever reads on.)
    pub(crate) fn null(&mut self) -> bool {
        self.skip_space();
        let null = self.text.as_bytes()[self.at..].starts_with(b"null");
        if null {
            self.at += 4;
        }
        null
    }

    /// A string without escapes (control characters are not allowed in JSON strings).
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        let len = first_special(&bytes[start..])?;
        if bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // The ends are ASCII quotes, so this slices on character boundaries.
        Some(&self.text[start..start + len])
    }

    /// A hashed value: a string, or `null` for none. Other types are left to serde.
    pub(crate) fn cell(&mut self) -> Option<Option<Cell<'a>>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(Cell(Some(Cow::Borrowed(self.string()?)))))
    }

    /// A JSON value, read by `serde_json` from here. serde's reader counts nesting from the top
    /// of the body and refuses it past 127 levels; read here, a value's levels count from
    /// itself, so one nested over 64 levels (this reader is at most 7 deep) is left to serde.
    pub(crate) fn value(&mut self) -> Option<Value> {
        fn nesting(v: &Value) -> usize {
            match v {
                Value::Array(a) => 1 + a.iter().map(nesting).max().unwrap_or(0),
                Value::Object(o) => 1 + o.values().map(nesting).max().unwrap_or(0),
                _ => 0,
            }
        }
        self.parse::<Value>().filter(|v| nesting(v) <= 64)
    }

    /// Skips a value as serde skips a field it does not know (`IgnoredAny`, which has no nesting
    /// limit).
    pub(crate) fn skip(&mut self) -> Option<()> {
        self.parse::<serde::de::IgnoredAny>().map(drop)
    }

    /// The JSON text of the next value, as it stands in the body.
    pub(crate) fn raw(&mut self) -> Option<&'a str> {
        self.skip_space();
        let start = self.at;
        self.skip()?;
        Some(&self.text[start..self.at])
    }

    /// A value of type `T`, read by `serde_json` from here.
    fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        self.skip_space();
        let mut values = serde_json::Deserializer::from_str(&self.text[self.at..]).into_iter::<T>();
        let value = values.next()?.ok()?;
        self.at += values.byte_offset();
        Some(value)
    }

    /// An object of the fields `names`, each read by `field` from its value on, given its index
    /// in `names`. A field not named is skipped, as serde skips it; a field given twice gives up
    /// (serde refuses it). No name holds a character JSON would escape.
    pub(crate) fn fields<const N: usize>(
        &mut self,
        names: [&str; N],
        mut field: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        let mut seen = [false; N];
        // The names are compared where the key lies, quotes included, from the one after the
        // last read (clients write an object's fields in one order); a key none of them is, is
        // read as a string and looked up. (`string` was a sixth of Data Manager's emulator's
        // time in a large upload, and 9 of a member's 15 strings are keys: compared so, its
        // fast reader took about a tenth less time on a body of 10,000 members.)
        let mut next = 0;
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.skip_space();
            let literal = (next..N).chain(0..next).find(|&i| self.quoted(names[i]));
            let i = match literal {
                Some(i) => Some(i),
                None => {
                    let key = self.string()?;
                    names.iter().position(|n| *n == key)
                }
            };
            self.eat(b':')?;
            match i {
                None => self.skip()?,
                Some(i) if std::mem::replace(&mut seen[i], true) => return None,
                Some(i) => {
                    field(self, i)?;
                    next = i + 1;
                }
            }
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    /// Takes the string `"text"`, if it comes next, as those very bytes. (For text without
    /// escapes, that is the string `string` would read as `text`.)
    fn quoted(&mut self, text: &str) -> bool {
        let rest = &self.text.as_bytes()[self.at..];
        let (text, len) = (text.as_bytes(), text.len());
        // The first characters are compared first: most names tried are not the key.
        let found = rest.len() > len + 1
            && rest[0] == b'"'
            && text.first().is_none_or(|c| rest[1] == *c)
            && rest[len + 1] == b'"'
            && &rest[1..=len] == text;
        if found {
            self.at += len + 2;
        }
        found
    }

    /// An object, each field read by `field` from its value on, given its key.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    /// An array, each item read by `item`.
    pub(crate) fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            if self.eat(b',').is_none() {
                return self.eat(b']');
            }
        }
    }
}

/// Where the first `"`, `\` or control character of `bytes` is: 32 bytes at a time where the
/// build targets AVX2 (x86-64-v3, as `.cargo/config.toml` sets), else sixteen on x86-64. (A byte
/// at a time, the search was a fifth of the emulator's time; sixteen at a time, the search of a
/// 64-digit hash took five steps rather than three.)
fn first_special(bytes: &[u8]) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        let whole = bytes.len() / 32 * 32;
        // SAFETY: the build targets AVX2, so every processor it runs on has it.
        if let Some(at) = unsafe { first_special_avx2(&bytes[..whole]) } {
            return Some(at);
        }
        first_special_swar(&bytes[whole..]).map(|at| whole + at)
    }
    #[cfg(all(target_arch = "x86_64", not(target_feature = "avx2")))]
    {
        let whole = bytes.len() / 16 * 16;
        // SSE2 is part of x86-64: every such processor has it.
        if let Some(at) = unsafe { first_special_sse2(&bytes[..whole]) } {
            return Some(at);
        }
        first_special_swar(&bytes[whole..]).map(|at| whole + at)
    }
    #[cfg(not(target_arch = "x86_64"))]
    first_special_swar(bytes)
}

/// `first_special` over whole blocks of 32 bytes.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[target_feature(enable = "avx2")]
unsafe fn first_special_avx2(bytes: &[u8]) -> Option<usize> {
    use std::arch::x86_64::*;
    let quote = _mm256_set1_epi8(b'"' as i8);
    let backslash = _mm256_set1_epi8(b'\\' as i8);
    let control = _mm256_set1_epi8(0x1f);
    for (i, block) in bytes.chunks_exact(32).enumerate() {
        // SAFETY: the block is 32 bytes long; the load needs no alignment.
        let v = unsafe { _mm256_loadu_si256(block.as_ptr().cast()) };
        // A byte is below 0x20 where the unsigned minimum of it and 0x1f is itself.
        let special = _mm256_or_si256(
            _mm256_or_si256(_mm256_cmpeq_epi8(v, quote), _mm256_cmpeq_epi8(v, backslash)),
            _mm256_cmpeq_epi8(_mm256_min_epu8(v, control), v),
        );
        let mask = _mm256_movemask_epi8(special);
        if mask != 0 {
            return Some(i * 32 + mask.trailing_zeros() as usize);
        }
    }
    None
}

/// `first_special` over whole blocks of 16 bytes.
#[cfg(all(target_arch = "x86_64", not(target_feature = "avx2")))]
#[target_feature(enable = "sse2")]
unsafe fn first_special_sse2(bytes: &[u8]) -> Option<usize> {
    use std::arch::x86_64::*;
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let control = _mm_set1_epi8(0x1f);
    for (i, block) in bytes.chunks_exact(16).enumerate() {
        // SAFETY: the block is 16 bytes long; the load needs no alignment.
        let v = unsafe { _mm_loadu_si128(block.as_ptr().cast()) };
        // A byte is below 0x20 where the unsigned minimum of it and 0x1f is itself.
        let special = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
            _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
        );
        let mask = _mm_movemask_epi8(special);
        if mask != 0 {
            return Some(i * 16 + mask.trailing_zeros() as usize);
        }
    }
    None
}

/// `first_special` eight bytes at a time, on any processor.
fn first_special_swar(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for (i, chunk) in chunks.by_ref().enumerate() {
        let w = u64::from_le_bytes(chunk.try_into().unwrap());
        let (quote, backslash) = (w ^ (ONES * b'"' as u64), w ^ (ONES * b'\\' as u64));
        // A byte's high bit is set below where a byte is zero (or below 0x20): the lowest one
        // set is exact; a borrow can only set bits above it.
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH;
        if found != 0 {
            return Some(i * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let rest = chunks.remainder();
    let at = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(bytes.len() - rest.len() + at)
}

#[cfg(test)]
mod tests {
    use super::{Reader, first_special, first_special_swar};

    /// The fields `fields` reads from `text` (by index in `names`, with their raw values), or
    /// `None` where it gives up.
    fn fields_of<const N: usize>(text: &str, names: [&str; N]) -> Option<Vec<(usize, String)>> {
        let mut r = Reader::new(text);
        let mut read = Vec::new();
        r.fields(names, |r, i| {
            read.push((i, r.raw()?.to_string()));
            Some(())
        })?;
        r.at_end().then_some(read)
    }

    #[test]
    fn fields_are_found_in_any_order_spacing_and_prefix_of_one_another() {
        let names = ["a", "ab", "b"];
        let all = Some(vec![(0, "1".into()), (1, "2".into()), (2, "3".into())]);
        assert_eq!(fields_of(r#"{"a":1,"ab":2,"b":3}"#, names), all);
        assert_eq!(
            fields_of(" { \"a\" : 1 ,\n\"ab\":2, \"b\"\t:3 } ", names),
            all
        );
        let reversed = Some(vec![(2, "3".into()), (1, "2".into()), (0, "1".into())]);
        assert_eq!(fields_of(r#"{"b":3,"ab":2,"a":1}"#, names), reversed);
        // Unknown keys, one of which begins with a name, are skipped.
        let some = Some(vec![(0, "1".into()), (2, "[3]".into())]);
        assert_eq!(fields_of(r#"{"a":1,"abc":{"a":2},"b":[3]}"#, names), some);
        assert_eq!(fields_of(r#"{"a":1,"":0,"b":[3]}"#, names), some);
        assert_eq!(fields_of("{}", names), Some(vec![]));
    }

    #[test]
    fn fields_give_up_on_a_repeated_field_an_escaped_key_or_a_cut_body() {
        let names = ["a", "b"];
        assert_eq!(fields_of(r#"{"a":1,"a":2}"#, names), None);
        assert_eq!(fields_of(r#"{"a":1,"b":2,"a":3}"#, names), None);
        assert_eq!(fields_of(r#"{"\u0061":1}"#, names), None);
        assert_eq!(fields_of(r#"{"a":1,"b""#, names), None);
        assert_eq!(fields_of(r#"{"a":1,"b"#, names), None);
        assert_eq!(fields_of(r#"{"a""#, names), None);
        assert_eq!(fields_of(r#"{"a":1"#, names), None);
    }

    #[test]
    fn the_first_quote_backslash_or_control_character_is_found_at_any_offset() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        for len in 0..100 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    // Letters, a two-byte character, bytes next to the special ones in value,
                    // and a quote after the special byte.
                    let mut bytes: Vec<u8> = (0..len)
                        .map(|i| [b'a', 0xc3, 0xa9, b'!', b'#', b'[', b']', 0x20, 0x7f][i % 9])
                        .collect();
                    if at < len {
                        bytes[at] = special;
                        if at + 1 < len {
                            bytes[at + 1] = b'"';
                        }
                    }
                    assert_eq!(first_special(&bytes), naive(&bytes), "{bytes:?}");
                    assert_eq!(first_special_swar(&bytes), naive(&bytes), "{bytes:?}");
                }
            }
        }
    }
}
