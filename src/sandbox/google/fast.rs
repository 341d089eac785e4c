//! A fast reader of `audienceMembers` request bodies in the shape clients write them: JSON,
//! compact or spaced, whose keys and identifier values hold no escapes. It folds members into
//! `Members` through the same functions as the serde reader, so what it reads it reads alike;
//! fields it does not know it skips with serde's own skipping, and other values (destinations,
//! consent, ...) `serde_json` reads. On anything else (an escape where it reads a string itself,
//! a field given twice, a value of another type, nesting near serde's limit) it gives up, and
//! the serde reader decides the body. (serde's visitors, one layer per level of a member, were
//! about half of the emulator's time in a large upload.)

use super::{AddressIn, IdentifierIn, Identifiers, Members, MembersRequest};
use crate::sandbox::Cell;
use crate::sandbox::state::MemberBatch;
use serde_json::Value;
use std::borrow::Cow;

/// Reads a request body, or `None` to leave it to the serde reader. Values other than the
/// members (destinations, consent, ...) are small and read by `serde_json` itself.
pub(super) fn request(text: &str) -> Option<MembersRequest> {
    let mut r = Reader { text, at: 0 };
    let mut request = MembersRequest::default();
    let names = [
        "destinations",
        "audienceMembers",
        "encoding",
        "termsOfService",
        "consent",
        "removeAsOfTime",
    ];
    r.fields(names, |r, i| {
        let value = match i {
            0 => &mut request.destinations,
            1 if r.null() => return Some(()),
            1 => {
                request.audience_members = Some(members(r)?);
                return Some(());
            }
            2 => &mut request.encoding,
            3 => &mut request.terms_of_service,
            4 => &mut request.consent,
            _ => &mut request.remove_as_of_time,
        };
        *value = r.value()?;
        Some(())
    })?;
    r.skip_space();
    (r.at == text.len()).then_some(request)
}

fn members(r: &mut Reader) -> Option<Members> {
    // Packed, members take under half the bytes of their JSON (hashes in binary, keys in a
    // byte), and a member's JSON is over 128 bytes unless it has one identifier: room for that
    // up front, rather than buffers grown and copied as they fill.
    let rest = r.text.len() - r.at;
    let mut members = Members {
        canonical: MemberBatch::with_capacity((rest / 128).min(super::MAX_MEMBERS), 64),
        ..Default::default()
    };
    r.array(|r| member(r, &mut members))?;
    Some(members)
}

fn member<'a>(r: &mut Reader<'a>, members: &mut Members) -> Option<()> {
    let mut ids: Option<Identifiers<'a>> = None;
    let mut consent = Value::Null;
    r.fields(["userData", "consent"], |r, i| {
        match i {
            0 if r.null() => {}
            0 => user_data(r, &mut ids)?,
            _ => consent = r.value()?,
        }
        Some(())
    })?;
    members.push(ids.as_ref(), &consent);
    Some(())
}

/// A `userData` object: its `userIdentifiers`, given once.
fn user_data<'a>(r: &mut Reader<'a>, ids: &mut Option<Identifiers<'a>>) -> Option<()> {
    r.fields(["userIdentifiers"], |r, _| {
        if r.null() {
            return Some(());
        }
        let list = ids.insert(Identifiers::default());
        r.array(|r| {
            let mut id = IdentifierIn::default();
            identifier(r, &mut id)?;
            list.push(&mut id);
            Some(())
        })
    })
}

/// Reads an identifier into `id`, where it lies.
fn identifier<'a>(r: &mut Reader<'a>, id: &mut IdentifierIn<'a>) -> Option<()> {
    r.fields(["emailAddress", "phoneNumber", "address"], |r, i| {
        match i {
            0 => id.email_address = r.cell()?,
            1 => id.phone_number = r.cell()?,
            _ if r.null() => id.address = None,
            _ => address(r, id.address.insert(AddressIn::default()))?,
        }
        Some(())
    })
}

/// Reads an `address` object into `a`.
fn address<'a>(r: &mut Reader<'a>, a: &mut AddressIn<'a>) -> Option<()> {
    r.fields(
        ["givenName", "familyName", "regionCode", "postalCode"],
        |r, i| {
            let cell = r.cell()?;
            match i {
                0 => a.given_name = cell,
                1 => a.family_name = cell,
                2 => a.region_code = cell,
                _ => a.postal_code = cell,
            }
            Some(())
        },
    )
}

/// A position in the body. Every reading function returns `None` where the body is not in the
/// shape this reader takes.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
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
    fn null(&mut self) -> bool {
        self.skip_space();
        let null = self.text.as_bytes()[self.at..].starts_with(b"null");
        if null {
            self.at += 4;
        }
        null
    }

    /// A string without escapes (control characters are not allowed in JSON strings).
    fn string(&mut self) -> Option<&'a str> {
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
    fn cell(&mut self) -> Option<Option<Cell<'a>>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(Cell(Some(Cow::Borrowed(self.string()?)))))
    }

    /// A JSON value, read by `serde_json` from here. serde's reader counts nesting from the top
    /// of the body and refuses it past 127 levels; read here, a value's levels count from
    /// itself, so one nested over 64 levels (this reader is at most 7 deep) is left to serde.
    fn value(&mut self) -> Option<Value> {
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
    fn skip(&mut self) -> Option<()> {
        self.parse::<serde::de::IgnoredAny>().map(drop)
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
    /// (serde refuses it).
    fn fields<const N: usize>(
        &mut self,
        names: [&str; N],
        mut field: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        let mut seen = [false; N];
        self.object(|r, key| match names.iter().position(|n| *n == key) {
            None => r.skip(),
            Some(i) if std::mem::replace(&mut seen[i], true) => None,
            Some(i) => field(r, i),
        })
    }

    /// An object, each field read by `field` from its value on, given its key.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
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
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
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

/// Where the first `"`, `\` or control character of `bytes` is: sixteen bytes at a time on
/// x86-64 (a byte at a time, the search was a fifth of the emulator's time).
fn first_special(bytes: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
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

/// `first_special` over whole blocks of 16 bytes.
#[cfg(target_arch = "x86_64")]
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
    use super::{first_special, first_special_swar};

    #[test]
    fn the_first_quote_backslash_or_control_character_is_found_at_any_offset() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        for len in 0..70 {
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
