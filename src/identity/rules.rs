//! The normalization rules of `shared/spec/identifiers.md`, one small function per kind.
//!
//! Every function takes a value after the common cleaning and writes the normalized form into a
//! reused `String`, so normalizing a column allocates nothing per row (but for text holding a
//! capital sigma, whose lower case needs the whole value's context). The column code in
//! `column.rs` calls `normalize` for each row and hashes what it wrote.

use super::geo::{self, Region};
use super::phone;
use super::profile::{Kind, Profile};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// What became of one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Normalized into the output buffer.
    Valid,
    /// Already a SHA-256 (64 hex characters): written lowercase into the output buffer.
    PreHashed,
    /// Null, empty after cleaning, or a value the rules treat as absent (an unknown gender).
    Missing,
    /// Not usable; the reason is counted as `<kind>:<reason>`.
    Invalid(&'static str),
}

/// Per-row facts some rules need.
#[derive(Clone, Copy, Debug, Default)]
pub struct RowContext {
    /// The row's country, else the job's default region.
    pub region: Option<Region>,
}

/// Reused buffers, one set per worker thread.
#[derive(Default)]
pub struct Scratch {
    nfc: String,
    tmp: String,
}

/// Common cleaning: NFC, then trim Unicode white space (no-break space included) and the
/// zero-width characters U+200B and U+FEFF. Returns the cleaned slice.
pub fn clean<'a>(raw: &'a str, nfc: &'a mut String) -> &'a str {
    // Characters below U+0300 (lead bytes below 0xCC: ASCII, Latin-1, Latin Extended-A and B)
    // neither combine nor compose with what precedes them, so such text is NFC as it stands:
    // the accents of European names need no table lookups.
    // The largest byte over the whole value, which the compiler vectorizes, rather than a
    // search that stops early: nearly every value is below.
    let s = if raw.bytes().fold(0, u8::max) < 0xCC
        || unicode_normalization::is_nfc_quick(raw.chars())
            == unicode_normalization::IsNormalized::Yes
    {
        raw
    } else {
        nfc.clear();
        nfc.extend(raw.nfc());
        nfc.as_str()
    };
    trim_blank(s)
}

/// `s` without what `is_blank` matches at either end. A value that begins and ends with a
/// visible ASCII character, as nearly every one does, is returned as it is: no such character is
/// blank, and a last byte below 0x80 is a whole character, so no characters need decoding.
fn trim_blank(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        _ => s.trim_matches(is_blank),
    }
}

/// UID2 takes E.164 numbers of 10 to 15 digits (its SDK's `is_phone_number_normalized`, the
/// reference for the uid2 profile): shorter numbers, valid in a few small countries, are
/// refused by the operator, so they are invalid here rather than sent to fail there.
fn uid2_phone_length(profile: Profile, e164: &str) -> Result<(), &'static str> {
    if profile == Profile::Uid2 && e164.len() - 1 < 10 {
        return Err("too_short_for_uid2");
    }
    Ok(())
}

/// What the common cleaning trims: Unicode white space, the zero-width space and the byte-order
/// mark, and the information separators U+001C to U+001F, which Python's `str.strip` and `\s`
/// (Google's formatter) take for white space though Unicode does not.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200B}' | '\u{FEFF}' | '\u{1C}'..='\u{1F}')
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Normalizes one raw value of `kind` for `profile`. `declared_hashed` marks a column the job
/// says holds SHA-256 hashes already.
pub fn normalize(
    profile: Profile,
    kind: Kind,
    raw: &str,
    declared_hashed: bool,
    ctx: RowContext,
    scratch: &mut Scratch,
    out: &mut String,
) -> Outcome {
    out.clear();
    let cleaned = clean(raw, &mut scratch.nfc);
    if cleaned.is_empty() {
        return Outcome::Missing;
    }
    // A date of birth is hashed in parts, so a whole-value hash cannot stand for it.
    let hashed_kind = profile.treatment(kind) == Some(super::profile::Treatment::Hashed)
        && kind != Kind::DateOfBirth;
    if declared_hashed || (hashed_kind && is_sha256_hex(cleaned)) {
        if !is_sha256_hex(cleaned) {
            return Outcome::Invalid("hash_shape");
        }
        out.push_str(cleaned);
        out.make_ascii_lowercase();
        return Outcome::PreHashed;
    }
    let tmp = &mut scratch.tmp;
    let result = match kind {
        Kind::Email => email(profile, cleaned, out),
        Kind::Phone => phone::to_e164(cleaned, ctx.region, profile != Profile::Meta, out)
            .map_err(|e| e.reason())
            .and_then(|()| uid2_phone_length(profile, out)),
        Kind::FirstName | Kind::LastName => name(profile, cleaned, out),
        Kind::City => city(cleaned, out),
        Kind::State => state(cleaned, ctx.region, tmp, out),
        Kind::Zip => zip(profile, cleaned, ctx.region, out),
        Kind::Country => match geo::country(cleaned, tmp) {
            Some(r) => {
                out.push_str(r.as_str());
                if profile == Profile::Meta {
                    out.make_ascii_lowercase();
                }
                Ok(())
            }
            // The table says: unknown is missing, not invalid.
            None => return Outcome::Missing,
        },
        Kind::DateOfBirth => date_of_birth(cleaned, out),
        Kind::Gender => return gender(cleaned, out),
        Kind::MobileAdId => mobile_ad_id(cleaned, out),
        Kind::ExternalId => {
            out.push_str(cleaned);
            Ok(())
        }
    };
    match result {
        Ok(()) => Outcome::Valid,
        Err(reason) => {
            out.clear();
            Outcome::Invalid(reason)
        }
    }
}

/// Appends `s` in lower case: exactly `str::to_lowercase(s)` (Unicode's full mapping with its
/// context rule, so a word-final `Σ` is `ς`). ASCII is lowercased a run at a time, in place,
/// without a search of the Unicode table: in text that is not all ASCII (half the e-mails of
/// `gen_data.py`, `josé.davis@web.de`), most characters still are.
fn push_lowercase(s: &str, out: &mut String) {
    if s.is_ascii() {
        push_ascii_lowercase(s, out);
        return;
    }
    let start = out.len();
    let mut rest = s;
    while !rest.is_empty() {
        let run = rest
            .bytes()
            .position(|b| !b.is_ascii())
            .unwrap_or(rest.len());
        push_ascii_lowercase(&rest[..run], out);
        let Some(c) = rest[run..].chars().next() else {
            break;
        };
        if c == '\u{3A3}' {
            // `Σ` takes the lower case of the whole value (`for_each_lower`).
            out.truncate(start);
            for_each_lower(s, |_, l| out.push(l));
            return;
        }
        lower_char(c, |l| out.push(l));
        rest = &rest[run + c.len_utf8()..];
    }
}

/// Appends `s` with its ASCII capitals lowercased and every other character as it is.
fn push_ascii_lowercase(s: &str, out: &mut String) {
    let start = out.len();
    out.push_str(s);
    out[start..].make_ascii_lowercase();
}

/// Calls `f(original, lower)` for each character of `str::to_lowercase(s)`, in order, with the
/// character of `s` it comes from (a character may give more than one: `İ` gives `i` and
/// U+0307). Filters that keep some characters of the lower case go through here, so the lower
/// case always has the context of the whole value.
///
/// `Σ` is the one character whose lower case depends on its neighbours (`ς` at the end of a
/// word, else `σ`: Unicode's Final_Sigma, the only context rule `str::to_lowercase` applies):
/// text holding it takes `str::to_lowercase` itself, which allocates. Every other character maps
/// on its own, as `char::to_lowercase` does, so other text allocates nothing.
#[inline]
fn for_each_lower(s: &str, mut f: impl FnMut(char, char)) {
    if s.is_ascii() {
        for b in s.bytes() {
            f(b as char, b.to_ascii_lowercase() as char);
        }
    } else if !maybe_sigma(s) {
        for c in s.chars() {
            lower_char(c, |l| f(c, l));
        }
    } else {
        let lower = s.to_lowercase();
        let mut lowered = lower.chars();
        for c in s.chars() {
            // `str::to_lowercase` gives each character what `char::to_lowercase` gives, but one
            // character (`σ` or `ς`) for a `Σ`.
            let n = if c == '\u{3A3}' {
                1
            } else {
                c.to_lowercase().count()
            };
            for l in lowered.by_ref().take(n) {
                f(c, l);
            }
        }
    }
}

/// Whether `s` may hold a `Σ` (U+03A3, bytes CE A3): a flag over its bytes, which the compiler
/// vectorizes, before a search that short values pay more to set up than to run.
#[inline]
fn maybe_sigma(s: &str) -> bool {
    s.bytes().fold(false, |m, b| m | (b == 0xCE)) && s.contains('\u{3A3}')
}

/// Calls `f` with each character of `char::to_lowercase(c)`. ASCII and Latin-1 (most of the
/// letters in a CRM's names and e-mails) by their rule, without a search of the Unicode table.
#[inline]
fn lower_char(c: char, mut f: impl FnMut(char)) {
    match c {
        'A'..='Z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{DE}' => {
            f(char::from_u32(c as u32 + 0x20).unwrap_or(c))
        }
        '\0'..='\u{FF}' => f(c),
        _ => c.to_lowercase().for_each(f),
    }
}

/// Whether `c` is a letter or a mark (Unicode general categories L and M). ASCII and the
/// accented letters of Latin-1 without a search of the Unicode table.
#[inline]
fn is_letter_or_mark(c: char) -> bool {
    match c {
        'a'..='z' | 'A'..='Z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{FF}' => {
            true
        }
        '\0'..='\u{7F}' => false,
        _ => matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter | GeneralCategoryGroup::Mark
        ),
    }
}

/// Lowercase; exactly one `@`, no white space, a local part, a domain with an inner `.`.
/// Google (gmail.com, googlemail.com) and UID2 (gmail.com) drop dots and `+tags` locally.
/// UID2 lowercases ASCII letters only (its rule and its SDK: `Ø` stays `Ø`); the others take the
/// full Unicode lower case.
fn email(profile: Profile, s: &str, out: &mut String) -> Result<(), &'static str> {
    let at = if s.is_ascii() {
        // Nearly every address: its shape is checked on its bytes, then it is lowercased, the
        // same for every profile (the lower case changes nothing the shape looks at, nor where
        // the `@` is).
        let at = ascii_email_shape(s.as_bytes())?;
        push_ascii_lowercase(s, out);
        at
    } else {
        if profile == Profile::Uid2 {
            // A deliberate deviation from UID2's SDK (`uid2-client`), which trims spaces only:
            // `clean` has trimmed all Unicode white space (the no-break space and the zero-width
            // characters included) here, the common cleaning every profile gets.
            push_ascii_lowercase(s, out);
        } else {
            push_lowercase(s, out);
        }
        email_shape(out)?
    };
    // Where the shape check found the one `@` (searching again, with `split_once`, was about
    // 0.8% of B1's samples with the zip's search for a dash). `normalize` cleared `out`.
    debug_assert_eq!(out.as_bytes().get(at), Some(&b'@'));
    let (local, domain) = (&out[..at], &out[at + 1..]);
    let canonical_gmail = match profile {
        Profile::Google => domain == "gmail.com" || domain == "googlemail.com",
        Profile::Uid2 => domain == "gmail.com",
        Profile::Meta => false,
    };
    if canonical_gmail {
        // In place: dots go from the local part, and so does a `+tag` up to the `@`.
        let at = local.len();
        let tag = local.find('+').unwrap_or(at);
        let mut i = 0;
        out.retain(|c| {
            let keep = if i < tag { c != '.' } else { i >= at };
            i += c.len_utf8();
            keep
        });
        if out.starts_with('@') {
            return Err("shape");
        }
    }
    Ok(())
}

/// `email`'s shape: exactly one `@`, a local part before it, a `.` in the domain neither first
/// nor last, no white space. Bytes suffice: no character's UTF-8 holds a `.` or an `@` but theirs.
/// White space beyond ASCII (U+0085, U+00A0, U+1680, U+2000 to U+205F, U+3000) begins with
/// one of four lead bytes: only text holding one is searched character by character, and
/// `ascii_email_shape` finds the ASCII white space (bytes below 0x80 are ASCII characters).
fn email_shape(lowered: &str) -> Result<usize, &'static str> {
    let b = lowered.as_bytes();
    let maybe_wide_space = b
        .iter()
        .fold(false, |w, &c| w | matches!(c, 0xC2 | 0xE1..=0xE3));
    if maybe_wide_space && lowered.chars().any(char::is_whitespace) {
        return Err("shape");
    }
    ascii_email_shape(b)
}

/// `email_shape` of ASCII text: its white space is these bytes. Counts and flags over the whole
/// value, which the compiler vectorizes, rather than searches that stop early. The `@`s are
/// counted in a byte that saturates (a sum in a `usize` took vectors of four 64-bit counts):
/// only whether there is exactly one matters.
fn ascii_email_shape(b: &[u8]) -> Result<usize, &'static str> {
    let ats = b
        .iter()
        .fold(0u8, |n, &c| n.saturating_add(u8::from(c == b'@')));
    let white_space = b.iter().fold(false, |w, &c| {
        w | matches!(c, b' ' | b'\t'..=b'\r' | 0x1C..=0x1F)
    });
    if ats != 1 || white_space {
        return Err("shape");
    }
    let at = b.iter().position(|&c| c == b'@').unwrap_or(0);
    let domain = &b[at + 1..];
    let domain_ok = domain.len() >= 3 && domain[1..domain.len() - 1].contains(&b'.');
    if at == 0 || !domain_ok {
        return Err("shape");
    }
    Ok(at)
}

/// Meta: lowercase letters and combining marks only (`O'Brien` -> `obrien`, accents kept): the
/// whole value is lowercased first, then letters and marks are kept, as Python's
/// `''.join(c for c in s.lower() if unicodedata.category(c)[0] in 'LM')` (`ΟΔΥΣΣΕΥΣ-Α` ->
/// `οδυσσευςα`: the `Σ` before the `-` ends a word).
/// Google: lowercase only, as Google's Data Manager library does.
fn name(profile: Profile, s: &str, out: &mut String) -> Result<(), &'static str> {
    match profile {
        Profile::Google => push_lowercase(s, out),
        // ASCII has no marks, and its letters are a-z and A-Z: no table lookups.
        _ if s.is_ascii() => {
            for b in s.bytes() {
                if b.is_ascii_alphabetic() {
                    out.push(b.to_ascii_lowercase() as char);
                }
            }
        }
        _ => for_each_lower(s, |_, l| {
            if is_letter_or_mark(l) {
                out.push(l);
            }
        }),
    }
    if out.is_empty() {
        Err("no_letters")
    } else {
        Ok(())
    }
}

/// Lowercase a-z only, diacritics removed: `Saint-Étienne` -> `saintetienne`.
fn city(s: &str, out: &mut String) -> Result<(), &'static str> {
    for c in s.nfd() {
        if is_combining_mark(c) {
            continue;
        }
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() {
            out.push(c);
        }
    }
    if out.is_empty() {
        Err("no_letters")
    } else {
        Ok(())
    }
}

/// US: the two-letter code in lowercase; elsewhere lowercase letters only.
fn state(
    s: &str,
    region: Option<Region>,
    tmp: &mut String,
    out: &mut String,
) -> Result<(), &'static str> {
    if region.is_some_and(|r| r.is_us()) {
        let code = geo::us_state(s, tmp).ok_or("unknown")?;
        out.push_str(code);
        return Ok(());
    }
    // The lower case of the whole value (its context decides a `Σ`), of the letters in it.
    for_each_lower(s, |c, l| {
        if c.is_alphabetic() {
            out.push(l);
        }
    });
    if out.is_empty() {
        Err("no_letters")
    } else {
        Ok(())
    }
}

/// Meta: lowercase, spaces and dashes removed; US: the first five digits, a 3-4 digit zip padded
/// with the zeros it lost. Google (sent raw): trimmed; US: five digits.
fn zip(
    profile: Profile,
    s: &str,
    region: Option<Region>,
    out: &mut String,
) -> Result<(), &'static str> {
    if region.is_some_and(|r| r.is_us()) {
        // The ZIP+4 extension, if any, follows a dash; only the base counts.
        // A byte search: `str::split`'s searcher costs more to set up than these few bytes take.
        let base = s
            .as_bytes()
            .iter()
            .position(|&b| b == b'-')
            .map_or(s, |dash| &s[..dash]);
        let digits = base.bytes().filter(|b| *b != b' ');
        let mut n = 0;
        let mut buf = [0u8; 5];
        for b in digits {
            if !b.is_ascii_digit() {
                return Err("shape");
            }
            if n < 5 {
                buf[n] = b;
            }
            n += 1;
        }
        if n < 3 {
            return Err("shape");
        }
        let kept = n.min(5);
        for _ in kept..5 {
            out.push('0');
        }
        out.push_str(std::str::from_utf8(&buf[..kept]).unwrap_or_default());
        return Ok(());
    }
    match profile {
        Profile::Google => out.push_str(s),
        // The lower case of the whole value (its context decides a `Σ`), without the spaces and
        // dashes in it.
        _ => for_each_lower(s, |c, l| {
            if c != '-' && !c.is_whitespace() {
                out.push(l);
            }
        }),
    }
    if out.is_empty() { Err("shape") } else { Ok(()) }
}

/// `YYYY-MM-DD` (also `/` or `.` separated, or `YYYYMMDD`) to `YYYYMMDD`, years 1900 to now.
fn date_of_birth(s: &str, out: &mut String) -> Result<(), &'static str> {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let separators_ok = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '-' | '/' | '.'));
    // Anything after the date (a time of day) is ignored: `1985-03-07 00:00:00`.
    let date_part = s.split([' ', 'T']).next().unwrap_or("");
    let (y, m, d) = if separators_ok && digits.len() == 8 && date_part.len() == 8 {
        (&digits[0..4], &digits[4..6], &digits[6..8])
    } else {
        let parts: Vec<&str> = date_part.split(['-', '/', '.']).collect();
        if parts.len() != 3 || parts[0].len() != 4 {
            return Err("shape");
        }
        (parts[0], parts[1], parts[2])
    };
    let (Ok(year), Ok(month), Ok(day)) = (y.parse::<i32>(), m.parse::<u32>(), d.parse::<u32>())
    else {
        return Err("shape");
    };
    let this_year = chrono::Datelike::year(&chrono::Utc::now().date_naive());
    if !(1900..=this_year).contains(&year)
        || chrono::NaiveDate::from_ymd_opt(year, month, day).is_none()
    {
        return Err("out_of_range");
    }
    use std::fmt::Write;
    let _ = write!(out, "{year:04}{month:02}{day:02}");
    Ok(())
}

/// `m` or `f` from m/male/f/female in any case; anything else is missing.
fn gender(s: &str, out: &mut String) -> Outcome {
    let g = if s.eq_ignore_ascii_case("m") || s.eq_ignore_ascii_case("male") {
        "m"
    } else if s.eq_ignore_ascii_case("f") || s.eq_ignore_ascii_case("female") {
        "f"
    } else {
        return Outcome::Missing;
    };
    out.push_str(g);
    Outcome::Valid
}

/// Lowercase, hyphens kept, and it must be a UUID (8-4-4-4-12 hex digits).
fn mobile_ad_id(s: &str, out: &mut String) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if !uuid {
        return Err("shape");
    }
    out.push_str(s);
    out.make_ascii_lowercase();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(s: &str) -> String {
        let mut out = String::new();
        push_lowercase(s, &mut out);
        out
    }

    /// Python's `''.join(c for c in s.lower() if unicodedata.category(c)[0] in 'LM')`.
    fn letters_and_marks_of_lower_case(s: &str) -> String {
        s.to_lowercase()
            .chars()
            .filter(|c| {
                matches!(
                    c.general_category_group(),
                    GeneralCategoryGroup::Letter | GeneralCategoryGroup::Mark
                )
            })
            .collect()
    }

    /// `email`'s shape check as it was before its ASCII path: on the lower case, by searches.
    fn shape_of_the_lower_case(s: &str) -> Result<String, &'static str> {
        let out = s.to_lowercase();
        let Some((local, domain)) = out.split_once('@') else {
            return Err("shape");
        };
        let d = domain.as_bytes();
        let domain_ok = d.len() >= 3 && d[1..d.len() - 1].contains(&b'.');
        let white_space = out
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '\u{1C}'..='\u{1F}'));
        if local.is_empty() || domain.contains('@') || !domain_ok || white_space {
            return Err("shape");
        }
        Ok(out)
    }

    #[test]
    fn ascii_emails_take_the_same_shape_check_as_their_lower_case() {
        let cases = [
            "John.Smith@Example.COM",
            "a@b.c",
            "@b.co",
            "a@",
            "a@.co",
            "a@co.",
            "a@c.o",
            "a@@b.co",
            "a@b@c.co",
            "ab.co",
            "a b@c.co",
            "a\tb@c.co",
            "a@b.co\u{1F}",
            "a\u{1C}@b.co",
            "A+Tag@GMail.com",
            "x.y+z@googlemail.com",
            "+@gmail.com",
            ".@gmail.com",
            "a@b..",
            "",
            "@",
            "a@bc",
            "a@b.c.d",
            "A@B.CO",
            "a@xn--bcher-kva.example",
        ];
        // Meta: no gmail rule after the shape check.
        for case in cases {
            let mut out = String::new();
            let got = email(Profile::Meta, case, &mut out).map(|()| out.clone());
            assert_eq!(got, shape_of_the_lower_case(case), "{case:?}");
        }
        // 257 `@`s: a count of them that wrapped at 256 would see one.
        let many = format!("a{}@b.co", "@".repeat(256));
        assert_eq!(
            email(Profile::Meta, &many, &mut String::new()),
            Err("shape")
        );
    }

    #[test]
    fn other_emails_take_the_same_shape_check_as_their_lower_case() {
        // Every character up to U+3100 (all of Unicode's white space among them) in a
        // non-ASCII address, in its local part and in its domain.
        for c in (0x80..0x3100).filter_map(char::from_u32) {
            for case in [
                format!("Jo{c}sÉ@Example.com"),
                format!("é@ex{c}ample.co"),
                format!("é{c}@b.co"),
                format!("{c}@é.co"),
            ] {
                let mut out = String::new();
                let got = email(Profile::Meta, &case, &mut out).map(|()| out.clone());
                assert_eq!(got, shape_of_the_lower_case(&case), "{case:?}");
            }
        }
        let mut out = String::new();
        assert_eq!(
            email(Profile::Meta, "jo\u{a0}sé@b.co", &mut out),
            Err("shape")
        );
        assert_eq!(
            email(Profile::Meta, "josé@b.co\u{3000}", &mut out),
            Err("shape")
        );
        assert_eq!(
            email(Profile::Meta, "JOSÉ\u{1F}@b.co", &mut out),
            Err("shape")
        );
    }

    #[test]
    fn lower_case_is_str_to_lowercase() {
        // Every character alone, and next to a capital sigma, whose lower case depends on its
        // neighbours (`ς` at the end of a word): the characters around it must stay in step with
        // the lower case of the whole value.
        for c in (0..=0x2FFFF).filter_map(char::from_u32) {
            let mut ours = String::new();
            lower_char(c, |l| ours.push(l));
            assert_eq!(
                ours,
                c.to_lowercase().collect::<String>(),
                "U+{:04X}",
                c as u32
            );
            assert_eq!(
                is_letter_or_mark(c),
                matches!(
                    c.general_category_group(),
                    GeneralCategoryGroup::Letter | GeneralCategoryGroup::Mark
                ),
                "U+{:04X}",
                c as u32
            );
            for s in [
                c.to_string(),
                format!("\u{391}{c}\u{3A3}"),
                format!("\u{391}\u{3A3}{c}"),
                // Runs of ASCII around it, lowercased a run at a time.
                format!("Ab{c}Cd"),
                format!("{c}A.B"),
            ] {
                assert_eq!(lower(&s), s.to_lowercase(), "U+{:04X} in {s:?}", c as u32);
                let mut name_meta = String::new();
                let _ = name(Profile::Meta, &s, &mut name_meta);
                assert_eq!(
                    name_meta,
                    letters_and_marks_of_lower_case(&s),
                    "U+{:04X} in {s:?}",
                    c as u32
                );
            }
        }
        for s in [
            "JOSÉ.Øvergaard+İ@GMAIL.com",
            "ΟΔΥΣΣΕΥΣ",
            "ΟΔΥΣΣΕΥΣ-ΑΝΤΩΝΙΟΥ",
            "ΝΙΚΟΣ.ΠΑΠΑΣ@Example.GR",
            "ΓΙΩΡΓΟΣ ΠΑΠΑΔΟΠΟΥΛΟΣ",
            "Σ",
            "ΑΣ'",
            "ΑΣ'Α",
            "Α\u{301}Σ\u{301}",
            "İSTANBUL",
            "ǅΣ",
            "ΣΣ Σ.Σ",
        ] {
            assert_eq!(lower(s), s.to_lowercase(), "{s}");
            let mut name_meta = String::new();
            let _ = name(Profile::Meta, s, &mut name_meta);
            assert_eq!(name_meta, letters_and_marks_of_lower_case(s), "{s}");
        }
        assert_eq!(
            lower("JOSÉ.Øvergaard+İ@GMAIL.com"),
            "josé.øvergaard+i\u{307}@gmail.com"
        );
        assert_eq!(lower("ΟΔΥΣΣΕΥΣ"), "οδυσσευς");
        assert_eq!(lower("ΝΙΚΟΣ.ΠΑΠΑΣ@Example.GR"), "νικοσ.παπας@example.gr");
        assert_eq!(lower("İSTANBUL"), "i\u{307}stanbul");
        // Lowercased before the `-` goes: that `Σ` ends a word.
        let mut out = String::new();
        assert_eq!(name(Profile::Meta, "ΟΔΥΣΣΕΥΣ-ΑΝΤΩΝΙΟΥ", &mut out), Ok(()));
        assert_eq!(out, "οδυσσευςαντωνιου");
    }

    #[test]
    fn text_below_u0300_is_nfc_as_it_stands() {
        // None of these characters combines: every pair of them is its own NFC.
        let below: Vec<char> = (0..0x300).filter_map(char::from_u32).collect();
        let mut pair = String::new();
        for &a in &below {
            for &b in &below {
                pair.clear();
                pair.push(a);
                pair.push(b);
                assert!(
                    pair.nfc().eq(pair.chars()),
                    "U+{:04X} U+{:04X}",
                    a as u32,
                    b as u32
                );
            }
        }
        let mut nfc = String::new();
        assert_eq!(clean("\u{a0}Jose\u{301} ", &mut nfc), "José");
        assert_eq!(clean(" Chloé\u{a0}", &mut nfc), "Chloé");
    }

    #[test]
    fn trimming_skips_only_values_that_begin_and_end_visible_ascii() {
        let ends: Vec<char> = (0..0x80)
            .chain([
                0x85, 0xA0, 0x1680, 0x2000, 0x200B, 0x2028, 0x3000, 0xFEFF, 0xE9,
            ])
            .filter_map(char::from_u32)
            .collect();
        for &a in &ends {
            for &b in &ends {
                for inner in ["", "x", " x ", "é"] {
                    let s = format!("{a}{inner}{b}");
                    assert_eq!(
                        trim_blank(&s),
                        s.trim_matches(is_blank),
                        "U+{:04X} {inner:?} U+{:04X}",
                        a as u32,
                        b as u32
                    );
                }
            }
        }
    }
}
