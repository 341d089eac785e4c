//! Phone numbers to E.164, through libphonenumber's rules (the `phonenumber` crate, a Rust port
//! with Google's metadata).
//!
//! The row's country is the default region, so national numbers (`(212) 555-0100` in a US row,
//! `020 7946 0958` in a GB row) gain their country code and lose the trunk prefix, and
//! international forms (`+44 …`, `0044 …` where 00 is the dialling prefix, `1 212 …` in North
//! America) keep theirs. A number is valid only when libphonenumber calls it possible for its
//! region, which is a length check; extensions are dropped.

use super::geo::Region;
use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use std::fmt::Write;
use std::str::FromStr;

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
    let id = region.and_then(|r| Id::from_str(r.as_str()).ok());
    if id.is_none() && !starts_international(cleaned) {
        return Err(PhoneError::NoRegion);
    }
    let number = phonenumber::parse(id, cleaned).map_err(|_| PhoneError::Unparseable)?;
    let code = number.code().value();
    let national = number.national();
    let zeros = national.zeros() as usize;
    let value = national.value();
    let digits = zeros + if value == 0 { 0 } else { decimal_len(value) };
    if !is_possible_length(code, digits) {
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
}
