//! Phone numbers to E.164, through libphonenumber's rules (the `phonenumber` crate, a Rust port
//! with Google's metadata).
//!
//! The row's country is the default region, so national numbers (`(212) 555-0100` in a US row,
//! `020 7946 0958` in a GB row) gain their country code and lose the trunk prefix, and
//! international forms (`+44 …`, `0044 …` where 00 is the dialling prefix, `1 212 …` in North
//! America) keep theirs. A number is valid only when libphonenumber calls it possible for its
//! region, which is a length check; extensions are dropped.
//!
//! Fast path. `phonenumber::parse` costs microseconds per value, and its regexes sit in one global
//! `Mutex<LruCache>` that matches under the lock, so parallel workers queue on it. Most values
//! are plain digits with a few separators, and for those the crate's parse reduces to a handful
//! of prefix tests on the digits. `fast_e164` does exactly those tests, with the region's rules
//! read from the crate's own metadata once (`RegionRule`), and answers only when the outcome is
//! certain; anything else (letters, extensions, unicode digits, a `+` that is not the first
//! character, a dialling or trunk prefix pattern it cannot evaluate, a leading zero left in the
//! national number, unusual lengths) goes to the crate (`to_e164_slow`), unchanged. The aim is
//! the crate's answer, bit for bit, with one quirk of the crate's taken out: given a default
//! region, it cuts that region's trunk prefix even from a `+`-prefixed number of another
//! country (`+44 1632 960000` in a US row gave `+44632960000`), where libphonenumber, Google's
//! formatter and UID2's SDK keep `+441632960000`. So a `+`-prefixed number is read without the
//! row's region (its own calling code decides), and the fast path leaves a number of another
//! calling code to that path. (A number written with a dialling prefix, `011 44 …` in a US
//! row, still goes through the crate with the row's region.) The crate also reads a national
//! number that begins with the region's calling code as that code and the rest.
//! `fast_path_matches_the_crate` checks the fast path against the crate on many generated
//! inputs. Whatever the path, more than 15 digits is no E.164 number.

use super::geo::Region;
use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use std::fmt::Write;
use std::str::FromStr;
use std::sync::OnceLock;

/// E.164's longest number: country code and national number.
const MAX_E164_DIGITS: usize = 15;

/// Why a phone number was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneError {
    /// No digits that libphonenumber can read as a number.
    Unparseable,
    /// Not `+`-prefixed and no country to read it in.
    NoRegion,
    /// Parsed, but not of a possible length for its region.
    NotPossible,
}

impl PhoneError {
    pub fn reason(self) -> &'static str {
        match self {
            PhoneError::Unparseable => "unparseable",
            PhoneError::NoRegion => "no_region",
            PhoneError::NotPossible => "not_possible",
        }
    }
}

/// Writes the E.164 form of `cleaned` into `out`, with or without the leading `+`.
pub fn to_e164(
    cleaned: &str,
    region: Option<Region>,
    with_plus: bool,
    out: &mut String,
) -> Result<(), PhoneError> {
    out.clear();
    if let Some(result) = fast_e164(cleaned, region, with_plus, out) {
        return result;
    }
    to_e164_slow(cleaned, region, with_plus, out)
}

/// `to_e164` through `phonenumber::parse`: the reference the fast path must agree with.
fn to_e164_slow(
    cleaned: &str,
    region: Option<Region>,
    with_plus: bool,
    out: &mut String,
) -> Result<(), PhoneError> {
    out.clear();
    let international = starts_international(cleaned);
    let id = region.and_then(|r| Id::from_str(r.as_str()).ok());
    if id.is_none() && !international {
        return Err(PhoneError::NoRegion);
    }
    let mut number = phonenumber::parse(id, cleaned).map_err(|_| PhoneError::Unparseable)?;
    // A `+` number of another calling code than the row's region is read by its own code (see
    // the module doc).
    if international && id.is_some() && region_code(region) != Some(number.code().value()) {
        number = phonenumber::parse(None, cleaned).map_err(|_| PhoneError::Unparseable)?;
    }
    let code = number.code().value();
    let national = number.national();
    let zeros = national.zeros() as usize;
    let value = national.value();
    let digits = zeros + if value == 0 { 0 } else { decimal_len(value) };
    if !is_possible_length(code, digits) || decimal_len(u64::from(code)) + digits > MAX_E164_DIGITS
    {
        return Err(PhoneError::NotPossible);
    }
    if with_plus {
        out.push('+');
    }
    let _ = write!(out, "{code}");
    for _ in 0..zeros {
        out.push('0');
    }
    if value != 0 {
        let _ = write!(out, "{value}");
    }
    Ok(())
}

/// The calling code of a region, from the crate's metadata.
fn region_code(region: Option<Region>) -> Option<u16> {
    DATABASE.by_id(region?.as_str()).map(|m| m.country_code())
}

fn starts_international(s: &str) -> bool {
    s.trim_start_matches(|c: char| !c.is_ascii_digit() && c != '+')
        .starts_with('+')
}

fn decimal_len(mut v: u64) -> usize {
    let mut n = 0;
    while v > 0 {
        n += 1;
        v /= 10;
    }
    n
}

/// libphonenumber's `isPossibleNumber` for the main region of a calling code: the national
/// significant number has one of the region's possible lengths, the union of the lengths of its
/// number types (as libphonenumber's metadata build computes the general description's). Local-
/// only lengths (a number without its area code) do not count: a platform cannot match them.
fn is_possible_length(code: u16, len: usize) -> bool {
    let Some(metas) = DATABASE.by_code(&code) else {
        return false;
    };
    let Some(meta) = metas
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or(metas.first())
    else {
        return false;
    };
    let d = meta.descriptors();
    std::iter::once(Some(d.general()))
        .chain([
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.voip(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ])
        .flatten()
        .any(|desc| desc.possible_length().iter().any(|&l| l as usize == len))
}

// The fast path --------------------------------------------------------------------------------

/// Most digits a value may hold for the fast path.
const MAX_DIGITS: usize = 24;

/// Longest national number the fast path writes: the crate refuses more than 17 digits, and its
/// national number keeps the value in 56 bits.
const MAX_NATIONAL: usize = 16;

/// The crate's answer for `cleaned` in `region`, when the value's shape makes it certain
/// without running the crate; `None` to ask the crate.
///
/// It follows `phonenumber::parse` step by step for values of ASCII digits, spaces, `-`, `.`,
/// `(`, `)`, `/` and a leading `+`:
/// 1. which of the crate's two readers takes the value: without spaces, `+44-20…` is read as
///    RFC 3966, whose calling code is everything between `+` and the first separator;
/// 2. the calling code: after `+` or the region's dialling prefix (when no `0` follows it), the
///    shortest 1-3 leading digits that are a known code; else the region's own, cut from the
///    front of a national number that repeats it;
/// 3. the row region's national prefix for parsing and trunk prefix, cut from the front;
/// 4. libphonenumber's possible lengths for the calling code.
fn fast_e164(
    cleaned: &str,
    region: Option<Region>,
    with_plus: bool,
    out: &mut String,
) -> Option<Result<(), PhoneError>> {
    let tables = tables();
    let rule = tables.regions[region_index(region?)?].as_ref()?;
    let (plus, body) = match cleaned.strip_prefix('+') {
        Some(rest) => (true, rest.as_bytes()),
        None => (false, cleaned.as_bytes()),
    };
    let mut buf = [0u8; MAX_DIGITS];
    let mut n = 0;
    let mut space = false;
    let mut slash = false;
    // Digits before the first RFC 3966 separator (`-`, `.`, `(`, `)`).
    let mut before_separator = None;
    for &b in body {
        match b {
            b'0'..=b'9' => {
                *buf.get_mut(n)? = b;
                n += 1;
            }
            b' ' => space = true,
            b'/' => slash = true,
            b'-' | b'.' | b'(' | b')' => {
                before_separator.get_or_insert(n);
            }
            // Letters (extensions, vanity numbers), other punctuation, unicode digits.
            _ => return None,
        }
    }
    let digits = &buf[..n];
    // With two digits or fewer the crate's two readers disagree on what is a number at all.
    if n < 3 {
        return None;
    }
    let (code, national) = if plus {
        match before_separator {
            // No spaces and a separator after the first digit: the crate's RFC 3966 reader
            // takes it, and the calling code is the digits before that separator. (With a `/`
            // that reader may stop early or take the `/` into the code: left to the crate.)
            Some(p) if !space && !slash && p > 0 => {
                let (prefix, rest) = digits.split_at(p);
                // Under 3 digits after the code is no number to the crate; a code it parses
                // as an integer (`0044`, `4420`) is its to judge.
                if rest.len() < 3 || prefix.len() > 3 || prefix[0] == b'0' {
                    return None;
                }
                let code = decimal(prefix);
                if !tables.known_code[code as usize] {
                    return None;
                }
                (code, rest)
            }
            _ if slash => return None,
            _ => {
                // `+` then the dialling prefix (`+00 44 …`): the crate strips that too.
                if rule
                    .idd
                    .as_ref()
                    .is_some_and(|idd| idd.match_start(digits) != StartMatch::No)
                {
                    return None;
                }
                calling_code(tables, digits)?
            }
        }
    } else {
        let idd = match &rule.idd {
            Some(idd) => idd.match_start(digits),
            None => StartMatch::No,
        };
        match idd {
            StartMatch::Unsure => return None,
            StartMatch::Literal(len) if digits.get(len) != Some(&b'0') => {
                calling_code(tables, &digits[len..])?
            }
            _ => (
                rule.code,
                digits
                    .strip_prefix(rule.code_digits.as_slice())
                    .unwrap_or(digits),
            ),
        }
    };
    // The row region's trunk prefix only applies to its own numbers; another country's number
    // is the crate's to read by its own code (see the module doc).
    if code != rule.code {
        return None;
    }
    let national = rule.strip_trunk(national)?;
    // A leading zero kept (Italy) or a length the crate refuses: its own path decides.
    if national.len() < 2 || national.len() > MAX_NATIONAL || national[0] == b'0' {
        return None;
    }
    if tables.possible_lengths[code as usize] >> national.len() & 1 == 0
        || decimal_len(u64::from(code)) + national.len() > MAX_E164_DIGITS
    {
        return Some(Err(PhoneError::NotPossible));
    }
    if with_plus {
        out.push('+');
    }
    push_decimal(code, out);
    // ASCII digits (`buf` takes nothing else), so their bytes are their text: pushed one `char`
    // at a time they took 0.6% of B1's samples, and checked again by `from_utf8` 0.3%.
    debug_assert!(national.iter().all(u8::is_ascii_digit));
    // SAFETY: `national` is part of `buf`, into which the loop above writes only ASCII digits.
    out.push_str(unsafe { std::str::from_utf8_unchecked(national) });
    Some(Ok(()))
}

/// The calling code the crate reads after `+` or a dialling prefix: the shortest leading 1-3
/// digits that are a known code. `None` where the crate fails (too short, a leading zero, no
/// known code).
fn calling_code<'a>(tables: &FastTables, digits: &'a [u8]) -> Option<(u16, &'a [u8])> {
    if digits.len() <= 2 || digits[0] == b'0' {
        return None;
    }
    (1..=3).find_map(|len| {
        let code = decimal(&digits[..len]);
        tables.known_code[code as usize].then(|| (code, &digits[len..]))
    })
}

fn decimal(digits: &[u8]) -> u16 {
    digits.iter().fold(0, |v, &d| v * 10 + u16::from(d - b'0'))
}

fn push_decimal(v: u16, out: &mut String) {
    if v >= 10 {
        push_decimal(v / 10, out);
    }
    out.push(char::from(b'0' + (v % 10) as u8));
}

/// The fast path's view of the metadata, built once.
struct FastTables {
    /// By region (`AA` to `ZZ`, see `region_index`): its rule, if the fast path handles it.
    regions: Vec<Option<RegionRule>>,
    /// By calling code below 1000: whether the metadata has it.
    known_code: Vec<bool>,
    /// By calling code below 1000: `is_possible_length` as a bit set (bit n: n digits), since
    /// that walks the metadata on every call.
    possible_lengths: Vec<u32>,
}

/// Loads the phone metadata and builds the fast path's tables (a tenth of a second or more),
/// so that a run does it while DataFusion plans and starts reading, not in the worker of the
/// first batch while the others wait for it.
pub fn warm_up() {
    tables();
}

fn tables() -> &'static FastTables {
    static TABLES: OnceLock<FastTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut regions: Vec<Option<RegionRule>> = (0..26 * 26).map(|_| None).collect();
        for meta in DATABASE.iter() {
            let id = meta.id();
            let &[a, b] = id.as_bytes() else { continue };
            // The crate path reaches a region's metadata through `Id`, so must this one.
            let Ok(parsed) = Id::from_str(id) else {
                continue;
            };
            if parsed.as_ref() != id {
                continue;
            }
            if let Some(index) = region_index(Region([a, b])) {
                regions[index] = RegionRule::from_metadata(meta);
            }
        }
        let known_code = (0..1000u16)
            .map(|c| DATABASE.by_code(&c).is_some())
            .collect();
        let possible_lengths = (0..1000u16)
            .map(|c| {
                (0..=MAX_NATIONAL)
                    .filter(|&len| is_possible_length(c, len))
                    .fold(0u32, |bits, len| bits | 1 << len)
            })
            .collect();
        FastTables {
            regions,
            known_code,
            possible_lengths,
        }
    })
}

fn region_index(region: Region) -> Option<usize> {
    let [a, b] = region.0;
    (a.is_ascii_uppercase() && b.is_ascii_uppercase())
        .then(|| usize::from(a - b'A') * 26 + usize::from(b - b'A'))
}

/// What the crate's parse does with numbers read in one region, from that region's metadata.
#[derive(Debug)]
struct RegionRule {
    code: u16,
    /// `code` in decimal, e.g. `b"44"`.
    code_digits: Vec<u8>,
    /// The international dialling prefix (`00`, `011`).
    idd: Option<StartRule>,
    /// The national prefix for parsing (a pattern; GB: `0|180020`).
    prefix_for_parsing: Option<StartRule>,
    /// The national (trunk) prefix, e.g. `0`; NANP: `1`.
    national_prefix: Option<Vec<u8>>,
}

impl RegionRule {
    fn from_metadata(meta: &phonenumber::Metadata) -> Option<RegionRule> {
        // While parsing, the crate asks whether the number has a possible length for the
        // general description (to decide on cutting the calling code or the national prefix);
        // the metadata lists no lengths there, so the answer never depends on the number, and
        // the steps in `fast_e164` assume so.
        if !meta.descriptors().general().possible_length().is_empty() {
            return None;
        }
        let code = meta.country_code();
        if code == 0 || code >= 1000 {
            return None;
        }
        let idd = match meta.international_prefix() {
            Some(re) => Some(StartRule::from_pattern(re.as_str(), true)?),
            None => None,
        };
        // With a transform rule the crate rewrites the number instead of cutting the match, so
        // a match is never treated as a plain cut.
        let cut_only = meta.national_prefix_transform_rule().is_none();
        let prefix_for_parsing = match meta.national_prefix_for_parsing() {
            Some(re) => Some(StartRule::from_pattern(re.as_str(), cut_only)?),
            None => None,
        };
        let national_prefix = match meta.national_prefix() {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.as_bytes().to_vec())
            }
            Some(_) => return None,
            None => None,
        };
        Some(RegionRule {
            code,
            code_digits: code.to_string().into_bytes(),
            idd,
            prefix_for_parsing,
            national_prefix,
        })
    }

    /// The crate's trunk prefix handling: `helper::national_number` cuts a match of the
    /// national prefix for parsing (or, without one, the national prefix), then `parse` cuts
    /// the national prefix once more. `None` when a pattern might match in a way not read here.
    fn strip_trunk<'a>(&self, national: &'a [u8]) -> Option<&'a [u8]> {
        let strip_prefix = |n: &'a [u8]| match &self.national_prefix {
            Some(p) if starts_with_digits(n, p) => &n[p.len()..],
            _ => n,
        };
        let n = match &self.prefix_for_parsing {
            None => strip_prefix(national),
            Some(rule) => match rule.match_start(national) {
                StartMatch::No => national,
                StartMatch::Literal(len) => &national[len..],
                StartMatch::Unsure => return None,
            },
        };
        Some(strip_prefix(n))
    }
}

/// `digits.starts_with(prefix)`, compared inline: the prefixes are a few digits (`1`, `011`),
/// and `starts_with` calls `memcmp` for each: 0.9% of B1's samples went to those calls.
#[inline]
fn starts_with_digits(digits: &[u8], prefix: &[u8]) -> bool {
    digits.len() >= prefix.len() && prefix.iter().zip(digits).all(|(p, d)| p == d)
}

/// How a metadata pattern (a dialling prefix, a national prefix for parsing) can match at the
/// start of a digit string. The crate only ever asks whether it matches at position 0, and
/// where that match ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StartRule {
    /// Plain digit strings (`00`, `011`, `0|180020`). Regex alternation is leftmost-first: the
    /// first listed that the digits start with is the match.
    Literals(Vec<Vec<u8>>),
    /// Anything richer: it can match at position 0 only when the digits start with one of
    /// `first_digits` (bit d for digit d) or number one of `lengths` (bit n for n digits, from
    /// alternatives anchored at the end such as `([2-9]\d{6})$`).
    Guard { first_digits: u16, lengths: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartMatch {
    No,
    /// A plain match of this many digits.
    Literal(usize),
    /// Maybe; the fast path leaves the value to the crate.
    Unsure,
}

impl StartRule {
    /// Reads a metadata pattern; `None` when it uses syntax this reader does not know (then
    /// the region keeps the crate path). Literal alternatives become `Literals` only when
    /// `literals` is set, else a `Guard` on their first digits.
    fn from_pattern(pattern: &str, literals: bool) -> Option<StartRule> {
        let pattern = without_whitespace(pattern)?;
        let alternatives = split_alternatives(&pattern)?;
        let is_literal = |a: &&str| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit());
        if literals && alternatives.iter().all(is_literal) {
            let literals = alternatives.iter().map(|a| a.as_bytes().to_vec()).collect();
            return Some(StartRule::Literals(literals));
        }
        let mut first_digits = 0;
        let mut lengths = 0;
        for a in alternatives {
            match anchored_length(a) {
                Some(len) => lengths |= 1 << len,
                None => first_digits |= first_digit_set(a)?,
            }
        }
        Some(StartRule::Guard {
            first_digits,
            lengths,
        })
    }

    fn match_start(&self, digits: &[u8]) -> StartMatch {
        match self {
            StartRule::Literals(literals) => literals
                .iter()
                .find(|l| starts_with_digits(digits, l))
                .map_or(StartMatch::No, |l| StartMatch::Literal(l.len())),
            StartRule::Guard {
                first_digits,
                lengths,
            } => {
                let by_digit = digits
                    .first()
                    .is_some_and(|&d| first_digits >> (d - b'0') & 1 == 1);
                let by_length = digits.len() < 32 && lengths >> digits.len() & 1 == 1;
                if by_digit || by_length {
                    StartMatch::Unsure
                } else {
                    StartMatch::No
                }
            }
        }
    }
}

/// The crate compiles metadata patterns with `ignore_whitespace`: white space outside a
/// character class means nothing. `None` for the cases where it would (escaped, in a class) or
/// for a `#` comment.
fn without_whitespace(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut in_class = false;
    let mut escaped = false;
    for c in pattern.chars() {
        if c.is_whitespace() {
            if in_class || escaped {
                return None;
            }
            continue;
        }
        if c == '#' && !escaped && !in_class {
            return None;
        }
        if !escaped {
            match c {
                '[' => in_class = true,
                ']' => in_class = false,
                _ => {}
            }
        }
        escaped = c == '\\' && !escaped;
        out.push(c);
    }
    Some(out)
}

/// Splits a pattern at its top-level `|`. `None` if brackets do not balance.
fn split_alternatives(pattern: &str) -> Option<Vec<&str>> {
    let mut parts = vec![];
    let mut depth = 0usize;
    let mut in_class = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in pattern.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => depth = depth.checked_sub(1)?,
            '|' if !in_class && depth == 0 => {
                parts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 || in_class || escaped {
        return None;
    }
    parts.push(&pattern[start..]);
    Some(parts)
}

/// The digits one alternative can start with, read from its first item (a digit, `\d`, a
/// class of digits, or a group). `None` when unsure: anything else, or a first item made
/// optional or repeatable by a quantifier.
fn first_digit_set(alternative: &str) -> Option<u16> {
    let b = alternative.as_bytes();
    let (set, item_len) = match *b.first()? {
        d @ b'0'..=b'9' => (1u16 << (d - b'0'), 1),
        b'\\' if b.get(1) == Some(&b'd') => (0x3ff, 2),
        b'[' => {
            let close = alternative.find(']')?;
            (class_digits(&alternative[1..close])?, close + 1)
        }
        b'(' => {
            let close = closing_paren(alternative)?;
            let inner = &alternative[1..close];
            let inner = inner.strip_prefix("?:").unwrap_or(inner);
            if inner.starts_with('?') {
                return None;
            }
            let mut set = 0;
            for a in split_alternatives(inner)? {
                set |= first_digit_set(a)?;
            }
            (set, close + 1)
        }
        _ => return None,
    };
    if matches!(b.get(item_len), Some(b'?' | b'*' | b'+' | b'{')) {
        return None;
    }
    Some(set)
}

/// The number of digits of an alternative `(C\d{K})$` (C a digit or a class of digits), which
/// can match at position 0 only a string of exactly K + 1 digits.
fn anchored_length(alternative: &str) -> Option<u32> {
    let inner = alternative.strip_prefix('(')?.strip_suffix(")$")?;
    let rest = match inner.strip_prefix('[') {
        Some(class) => {
            let close = class.find(']')?;
            class_digits(&class[..close])?;
            &class[close + 1..]
        }
        None => inner.strip_prefix(|c: char| c.is_ascii_digit())?,
    };
    let k: u32 = rest.strip_prefix("\\d{")?.strip_suffix('}')?.parse().ok()?;
    (k < 31).then_some(k + 1)
}

/// The digits of a character class body such as `2-9` or `14-689`; `None` for anything else.
fn class_digits(body: &str) -> Option<u16> {
    let b = body.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut set = 0u16;
    let mut i = 0;
    while i < b.len() {
        let lo = b[i];
        if !lo.is_ascii_digit() {
            return None;
        }
        let hi = if b.get(i + 1) == Some(&b'-') {
            let hi = *b.get(i + 2)?;
            if !hi.is_ascii_digit() || hi < lo {
                return None;
            }
            i += 3;
            hi
        } else {
            i += 1;
            lo
        };
        for d in lo..=hi {
            set |= 1 << (d - b'0');
        }
    }
    Some(set)
}

/// The index of the `)` closing the group that opens at 0.
fn closing_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_class = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(s: &str, region: &str) -> Result<String, PhoneError> {
        let mut out = String::new();
        to_e164(s, Region::from_code(region), true, &mut out).map(|_| out)
    }

    #[test]
    fn national_numbers_take_the_rows_country() {
        assert_eq!(e164("(212) 555-0123", "US").unwrap(), "+12125550123");
        assert_eq!(e164("212.555.0123", "US").unwrap(), "+12125550123");
        assert_eq!(e164("020 7946 0958", "GB").unwrap(), "+442079460958");
        assert_eq!(e164("030 1234567", "DE").unwrap(), "+49301234567");
        assert_eq!(e164("06 12 34 56 78", "FR").unwrap(), "+33612345678");
    }

    #[test]
    fn international_forms_keep_their_country() {
        assert_eq!(e164("+44 20 7946 0958", "US").unwrap(), "+442079460958");
        assert_eq!(e164("0044 20 7946 0958", "GB").unwrap(), "+442079460958");
        assert_eq!(e164("00 49 30 1234567", "DE").unwrap(), "+49301234567");
        assert_eq!(e164("1 212 555 0123", "US").unwrap(), "+12125550123");
        assert_eq!(e164("+1-212-555-0123", "CA").unwrap(), "+12125550123");
    }

    #[test]
    fn extension_is_dropped() {
        assert_eq!(e164("212-555-0123 ext. 45", "US").unwrap(), "+12125550123");
    }

    #[test]
    fn wrong_length_and_garbage_are_invalid() {
        assert_eq!(e164("555-0123", "US"), Err(PhoneError::NotPossible));
        assert_eq!(e164("n/a", "US"), Err(PhoneError::Unparseable));
        assert_eq!(e164("212 555 0123", "??"), Err(PhoneError::NoRegion));
        assert_eq!(e164("+1 212 555 0123", "??").unwrap(), "+12125550123");
    }

    #[test]
    fn start_rules_read_metadata_patterns() {
        let rule = |p: &str, literals: bool| StartRule::from_pattern(p, literals);
        let guard = |first: &[u8], lengths: &[u32]| {
            Some(StartRule::Guard {
                first_digits: first.iter().fold(0, |s, d| s | 1 << d),
                lengths: lengths.iter().fold(0, |s, l| s | 1 << l),
            })
        };
        assert_eq!(
            rule("011", true),
            Some(StartRule::Literals(vec![b"011".to_vec()]))
        );
        assert_eq!(
            rule("0|180020", true),
            Some(StartRule::Literals(vec![b"0".to_vec(), b"180020".to_vec()]))
        );
        // Literals under a transform rule: only a guard.
        assert_eq!(rule("0|180020", false), guard(&[0, 1], &[]));
        // AU, BR, JP, NANP islands, Guernsey.
        assert_eq!(
            rule("001[14-689]|14(?:1[14]|34|4[17]|[56]6|7[47]|88)0011", true),
            guard(&[0, 1], &[])
        );
        assert_eq!(rule("(183[12])|0", true), guard(&[0, 1], &[]));
        assert_eq!(
            rule(
                "(?:0|90)(?:\n  (1[245]|2[1-35]|31|4[13]|[56]5|99)(\\d{10,11})\n)?",
                false
            ),
            guard(&[0, 9], &[])
        );
        assert_eq!(
            rule("(000[2569]\\d{4,6})$|(?:(?:003768)0?)|0", false),
            guard(&[0], &[])
        );
        assert_eq!(rule("([2-9]\\d{6})$|1", false), guard(&[1], &[7]));
        assert_eq!(
            rule("([25-9]\\d{5})$|0|180020", false),
            guard(&[0, 1], &[6])
        );
        assert_eq!(rule("[08]", true), guard(&[0, 8], &[]));
        // What it cannot read: an optional first item, unknown syntax.
        assert_eq!(rule("0?(?:(11|2)15)?", true), None);
        assert_eq!(rule("(1)?0", true), None);
        assert_eq!(rule("[^0]", true), None);
        assert_eq!(rule("\\s0", true), None);
        assert_eq!(rule("0 # comment", true), None);
    }

    #[test]
    fn fast_path_covers_the_benchmark_regions() {
        for r in [
            "US", "CA", "GB", "DE", "FR", "BR", "JP", "IN", "AU", "ES", "IT", "PR", "JM", "KY",
        ] {
            let region = Region::from_code(r).unwrap();
            assert!(
                tables().regions[region_index(region).unwrap()].is_some(),
                "{r}"
            );
        }
        let mut out = String::new();
        let fast = |s: &str, r: &str, out: &mut String| {
            out.clear();
            fast_e164(s, Region::from_code(r), true, out)
        };
        assert_eq!(fast("(212) 555-0123", "US", &mut out), Some(Ok(())));
        assert_eq!(out, "+12125550123");
        assert_eq!(fast("020 7946 0958", "GB", &mut out), Some(Ok(())));
        assert_eq!(out, "+442079460958");
        assert_eq!(fast("0049 30 1234567", "DE", &mut out), Some(Ok(())));
        assert_eq!(out, "+49301234567");
        assert_eq!(fast("+81-3-1234-5678", "JP", &mut out), Some(Ok(())));
        assert_eq!(out, "+81312345678");
        assert_eq!(
            fast("555-0123", "US", &mut out),
            Some(Err(PhoneError::NotPossible))
        );
        // Left to the crate: an extension, a trunk prefix under a pattern it cannot read, an
        // Italian leading zero.
        assert_eq!(fast("212-555-0123 x99", "US", &mut out), None);
        assert_eq!(fast("03-1234-5678", "JP", &mut out), None);
        assert_eq!(fast("02 1234 5678", "IT", &mut out), None);
    }

    /// xorshift64*, so the generated cases are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
    }

    /// The countries of `shared/bench/gen_data.py` with their calling codes.
    const BENCH_COUNTRIES: [(&str, &str); 10] = [
        ("US", "1"),
        ("GB", "44"),
        ("DE", "49"),
        ("FR", "33"),
        ("CA", "1"),
        ("BR", "55"),
        ("JP", "81"),
        ("IN", "91"),
        ("AU", "61"),
        ("ES", "34"),
    ];

    /// A phone as `gen_data.py` writes it (`make_customers`), white space padding included.
    fn bench_phone(rng: &mut Rng, country: &str, dial: &str) -> String {
        let mut d = (2_000_000_000 + rng.next() % 7_999_999_999).to_string();
        if matches!(country, "FR" | "AU" | "ES") {
            d.truncate(9);
        }
        if d.starts_with(dial) || d.starts_with('9') {
            d.replace_range(..1, "7");
        }
        let nanp = matches!(country, "US" | "CA");
        let idd00 = matches!(country, "GB" | "DE" | "FR" | "ES" | "IN");
        let mut fmt = rng.below(7);
        if fmt == 4 && !nanp {
            fmt = 6;
        }
        if fmt == 5 && !idd00 {
            fmt = 3;
        }
        let (d3, d6, d10) = (&d[..3], &d[3..6], &d[6..]);
        let phone = match fmt {
            0 => format!("({d3}) {d6}-{d10}"),
            1 => format!("{d3}-{d6}-{d10}"),
            2 => format!("{d3}.{d6}.{d10}"),
            3 => format!("+{dial} {d3} {d6} {d10}"),
            4 => format!("{dial}{d}"),
            5 => format!("00{dial}{d}"),
            _ => format!("+{dial}-{d}"),
        };
        if rng.chance(10) {
            let before = rng.pick(&[" ", "  ", "\t", " \u{a0}"]);
            let after = rng.pick(&[" ", "", "  "]);
            format!("{before}{phone}{after}")
        } else {
            phone
        }
    }

    /// A random string that a metadata pattern matches, for the syntax metadata patterns use
    /// (digits, `\d`, classes, groups, `|`, `?`, `*`, `+`, `{n}`, `{n,m}`, `$`); `None` for
    /// anything else.
    fn sample(pattern: &str, rng: &mut Rng) -> Option<String> {
        let mut out = String::new();
        sample_into(&without_whitespace(pattern)?, rng, &mut out)?;
        Some(out)
    }

    fn sample_into(pattern: &str, rng: &mut Rng, out: &mut String) -> Option<()> {
        let mut s = *rng.pick(&split_alternatives(pattern)?);
        while let Some(&first) = s.as_bytes().first() {
            let item_len = match first {
                b'0'..=b'9' => 1,
                b'\\' if s[1..].starts_with('d') => 2,
                b'[' => s.find(']')? + 1,
                b'(' => closing_paren(s)? + 1,
                b'$' => {
                    s = &s[1..];
                    continue;
                }
                _ => return None,
            };
            let (item, rest) = s.split_at(item_len);
            let (min, max, rest) = match rest.as_bytes().first() {
                Some(b'?') => (0, 1, &rest[1..]),
                Some(b'*') => (0, 2, &rest[1..]),
                Some(b'+') => (1, 2, &rest[1..]),
                Some(b'{') => {
                    let close = rest.find('}')?;
                    let (lo, hi) = match rest[1..close].split_once(',') {
                        Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
                        None => (rest[1..close].parse().ok()?, rest[1..close].parse().ok()?),
                    };
                    (lo, hi, &rest[close + 1..])
                }
                _ => (1, 1, rest),
            };
            for _ in 0..min + rng.below(max - min + 1) {
                match first {
                    b'(' => {
                        let inner = &item[1..item.len() - 1];
                        sample_into(inner.strip_prefix("?:").unwrap_or(inner), rng, out)?;
                    }
                    b'0'..=b'9' => out.push(char::from(first)),
                    _ => {
                        let set = if first == b'[' {
                            class_digits(&item[1..item.len() - 1])?
                        } else {
                            0x3ff
                        };
                        let digits: Vec<u8> = (0..10).filter(|d| set >> d & 1 == 1).collect();
                        out.push(char::from(b'0' + *rng.pick(&digits)));
                    }
                }
            }
            s = rest;
        }
        Some(())
    }

    /// What a region's metadata says about dialling into and within it, as text.
    struct RegionPatterns {
        code: String,
        idd: Option<String>,
        prefix_for_parsing: Option<String>,
        national_prefix: String,
    }

    /// A number-like value for a region: a dialling form (`+`, its dialling prefix, its
    /// national prefixes, strings its prefix patterns match, another region's code), then
    /// digits that often begin with the trunk digits 0 and 1, separated now and then.
    fn shaped_phone(rng: &mut Rng, region: &RegionPatterns, other_code: &str) -> String {
        let code = &region.code;
        let sampled = |pattern: &Option<String>, rng: &mut Rng| {
            pattern
                .as_deref()
                .and_then(|p| sample(p, rng))
                .unwrap_or_default()
        };
        let lead = match rng.below(18) {
            0 | 1 => format!("+{code}"),
            2 => format!("00{code}"),
            3 => format!("011{code}"),
            4 => code.to_string(),
            5 => "0".to_string(),
            6 => "1".to_string(),
            7 => format!("+0{code}"),
            8 => format!("+{other_code}"),
            9 => format!("00{other_code}"),
            10 => format!("{}{other_code}", sampled(&region.idd, rng)),
            11 => format!("+{}{other_code}", sampled(&region.idd, rng)),
            12 => format!("{}0{other_code}", sampled(&region.idd, rng)),
            13 | 14 => sampled(&region.prefix_for_parsing, rng),
            15 => format!("+{code}{}", sampled(&region.prefix_for_parsing, rng)),
            16 => format!("{}{}", region.national_prefix, region.national_prefix),
            _ => String::new(),
        };
        let mut national = String::new();
        for i in 0..rng.below(16) {
            let d = if i < 2 && rng.chance(30) {
                *rng.pick(&['0', '1'])
            } else {
                char::from(b'0' + rng.below(10) as u8)
            };
            national.push(d);
        }
        const SEPARATORS: [&str; 12] = [
            " ", " ", "-", "-", ".", "(", ")", "/", " - ", ") ", " (", "--",
        ];
        let mut s = String::new();
        for (i, c) in lead.chars().chain(national.chars()).enumerate() {
            if i > 0 && rng.chance(20) {
                s.push_str(rng.pick::<&str>(&SEPARATORS));
            }
            s.push(c);
        }
        if rng.chance(5) {
            s.push_str(rng.pick::<&str>(&[")", ".", " ", "-", " x12", " ext. 7", "#", ";ext=3"]));
        }
        s
    }

    /// Anything: digits, separators, pluses, letters, extensions, unicode digits and spaces.
    fn noisy_phone(rng: &mut Rng) -> String {
        const PIECES: [&str; 40] = [
            "0",
            "1",
            "2",
            "5",
            "9",
            "00",
            "011",
            "44",
            "49",
            "1",
            "0800",
            "123",
            "4567",
            "2125550123",
            "+",
            "++",
            " ",
            "-",
            ".",
            "(",
            ")",
            "/",
            "x",
            "ext",
            "ext. ",
            "#",
            "*",
            ";ext=",
            "tel:",
            ";",
            ",",
            "a",
            "Z",
            "\u{a0}",
            "\t",
            "\u{663}",
            "\u{ff13}",
            "\u{ff0b}",
            "\u{2013}",
            "~",
        ];
        (0..rng.below(12)).map(|_| *rng.pick(&PIECES)).collect()
    }

    #[derive(Default)]
    struct Tally {
        cases: usize,
        fast: usize,
    }

    fn same_as_crate(cleaned: &str, region: Option<Region>, with_plus: bool, tally: &mut Tally) {
        let mut want = String::new();
        let want_result = to_e164_slow(cleaned, region, with_plus, &mut want);
        let mut got = String::new();
        let got_result = to_e164(cleaned, region, with_plus, &mut got);
        assert_eq!(
            (got_result, got.as_str()),
            (want_result, want.as_str()),
            "{cleaned:?} in {region:?}"
        );
        let mut fast = String::new();
        if let Some(fast_result) = fast_e164(cleaned, region, with_plus, &mut fast) {
            assert_eq!((fast_result, fast.as_str()), (want_result, want.as_str()));
            tally.fast += 1;
        }
        tally.cases += 1;
    }

    /// The fast path gives the crate's answer: on every shape the benchmark data has, for its
    /// countries, and on generated number-like and random values in every region the metadata
    /// knows. Values go region by region, which keeps the crate's regex cache warm.
    #[test]
    fn fast_path_matches_the_crate() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut nfc = String::new();
        let region = |r: &str| Region::from_code(r);

        let mut bench = Tally::default();
        for (country, dial) in BENCH_COUNTRIES {
            for _ in 0..4000 {
                let raw = bench_phone(&mut rng, country, dial);
                let cleaned = super::super::rules::clean(&raw, &mut nfc).to_string();
                same_as_crate(&cleaned, region(country), rng.chance(50), &mut bench);
            }
            // The same shapes in a row of another country.
            let other = rng.pick(&BENCH_COUNTRIES).0;
            for _ in 0..500 {
                let phone = bench_phone(&mut rng, country, dial);
                same_as_crate(
                    phone.trim(),
                    region(other),
                    rng.chance(50),
                    &mut Tally::default(),
                );
            }
        }
        assert_eq!(
            bench.fast, bench.cases,
            "every benchmark shape takes the fast path"
        );

        let mut regions: Vec<(Region, RegionPatterns)> = DATABASE
            .iter()
            .filter_map(|m| {
                let &[a, b] = m.id().as_bytes() else {
                    return None;
                };
                let patterns = RegionPatterns {
                    code: m.country_code().to_string(),
                    idd: m.international_prefix().map(|r| r.as_str().to_string()),
                    prefix_for_parsing: m
                        .national_prefix_for_parsing()
                        .map(|r| r.as_str().to_string()),
                    national_prefix: m.national_prefix().unwrap_or_default().to_string(),
                };
                Some((Region([a, b]), patterns))
            })
            .collect();
        regions.sort_by_key(|(r, _)| r.0);
        let codes: Vec<String> = regions.iter().map(|(_, p)| p.code.clone()).collect();
        let mut shaped = Tally::default();
        for (r, patterns) in &regions {
            for _ in 0..300 {
                let other = rng.pick(&codes).clone();
                let phone = shaped_phone(&mut rng, patterns, &other);
                same_as_crate(&phone, Some(*r), rng.chance(50), &mut shaped);
            }
        }
        let mut noisy = Tally::default();
        let mut regions: Vec<Option<Region>> =
            BENCH_COUNTRIES.iter().map(|(c, _)| region(c)).collect();
        regions.extend([None, Some(Region(*b"ZZ")), region("IT"), region("KY")]);
        for r in regions {
            for _ in 0..1500 {
                let phone = noisy_phone(&mut rng);
                same_as_crate(&phone, r, rng.chance(50), &mut noisy);
            }
            same_as_crate("", r, true, &mut noisy);
        }
        eprintln!(
            "fast path: benchmark shapes {}/{}, shaped {}/{}, noisy {}/{}",
            bench.fast, bench.cases, shaped.fast, shaped.cases, noisy.fast, noisy.cases
        );
        assert!(shaped.cases > 60_000 && shaped.fast * 3 > shaped.cases);
    }
}
