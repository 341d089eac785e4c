//! Countries and US states: the lookups behind the `country` and `state` rules and the region
//! a phone number is parsed in.
//!
//! ISO 3166-1 codes and names come from the `isocountry` crate; what it lacks are the names
//! people actually type (`United States`, `UK`, `Deutschland`), kept in a short alias list.

use std::collections::HashMap;
use std::sync::OnceLock;

/// An ISO 3166-1 alpha-2 code in upper case, e.g. `*b"US"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region(pub [u8; 2]);

impl Region {
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    pub fn is_us(&self) -> bool {
        self.0 == *b"US"
    }

    /// Parses a configured region such as `US` or `gb` (alpha-2 only).
    pub fn from_code(code: &str) -> Option<Region> {
        let c = code.trim();
        if c.len() != 2 {
            return None;
        }
        let b = c.as_bytes();
        if b.is_ascii() {
            return Region::from_ascii_pair(b);
        }
        let region = Region([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]);
        isocountry::CountryCode::for_alpha2_caseless(c)
            .is_ok()
            .then_some(region)
    }

    /// The region of two ASCII letters in either case, such as the country column's normalized
    /// value; anything else is none. Called for every row with a country (the phone's region),
    /// so a table lookup rather than `for_alpha2_caseless`, which allocates an upper-case copy
    /// and then walks a long match. Both agree on ASCII input
    /// (`alpha2_table_agrees_with_isocountry`).
    pub fn from_ascii_pair(code: &[u8]) -> Option<Region> {
        let &[a, b] = code else {
            return None;
        };
        let region = Region([a.to_ascii_uppercase(), b.to_ascii_uppercase()]);
        is_alpha2(region).then_some(region)
    }
}

/// Whether an upper-case ASCII pair is an ISO 3166-1 alpha-2 code.
fn is_alpha2(region: Region) -> bool {
    static CODES: OnceLock<[bool; 26 * 26]> = OnceLock::new();
    let index = |[a, b]: [u8; 2]| {
        (a.is_ascii_uppercase() && b.is_ascii_uppercase())
            .then(|| usize::from(a - b'A') * 26 + usize::from(b - b'A'))
    };
    let codes = CODES.get_or_init(|| {
        let mut codes = [false; 26 * 26];
        for c in isocountry::CountryCode::iter() {
            if let &[a, b] = c.alpha2().as_bytes()
                && let Some(i) = index([a, b])
            {
                codes[i] = true;
            }
        }
        codes
    });
    index(region.0).is_some_and(|i| codes[i])
}

/// Names and abbreviations people use for countries, beyond ISO's own names and codes.
const COUNTRY_ALIASES: &[(&str, &str)] = &[
    ("unitedstates", "US"),
    ("unitedstatesofamerica", "US"),
    ("america", "US"),
    ("usofa", "US"),
    ("uk", "GB"),
    ("unitedkingdom", "GB"),
    ("greatbritain", "GB"),
    ("britain", "GB"),
    ("england", "GB"),
    ("scotland", "GB"),
    ("wales", "GB"),
    ("northernireland", "GB"),
    ("deutschland", "DE"),
    ("germany", "DE"),
    ("espana", "ES"),
    ("brasil", "BR"),
    ("nippon", "JP"),
    ("nihon", "JP"),
    ("southkorea", "KR"),
    ("korea", "KR"),
    ("northkorea", "KP"),
    ("russia", "RU"),
    ("holland", "NL"),
    ("thenetherlands", "NL"),
    ("netherlands", "NL"),
    ("czechia", "CZ"),
    ("czechrepublic", "CZ"),
    ("vietnam", "VN"),
    ("taiwan", "TW"),
    ("iran", "IR"),
    ("syria", "SY"),
    ("laos", "LA"),
    ("bolivia", "BO"),
    ("venezuela", "VE"),
    ("tanzania", "TZ"),
    ("moldova", "MD"),
    ("macedonia", "MK"),
    ("northmacedonia", "MK"),
    ("turkey", "TR"),
    ("turkiye", "TR"),
    ("ivorycoast", "CI"),
    ("uae", "AE"),
    ("unitedarabemirates", "AE"),
    ("suisse", "CH"),
    ("schweiz", "CH"),
    ("osterreich", "AT"),
    ("italia", "IT"),
    ("mexico", "MX"),
    ("polska", "PL"),
    ("sverige", "SE"),
    ("norge", "NO"),
    ("danmark", "DK"),
    ("suomi", "FI"),
    ("belgique", "BE"),
    ("belgie", "BE"),
];

/// Folds a name to lowercase ASCII letters, accents removed: `Côte d'Ivoire` -> `cotedivoire`.
pub fn fold_letters(s: &str, out: &mut String) {
    use unicode_normalization::UnicodeNormalization;
    out.clear();
    for c in s.nfd() {
        if c.is_ascii_alphabetic() {
            out.push(c.to_ascii_lowercase());
        }
    }
}

fn country_names() -> &'static HashMap<String, Region> {
    static NAMES: OnceLock<HashMap<String, Region>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut map = HashMap::new();
        let mut key = String::new();
        for c in isocountry::CountryCode::iter() {
            let region = Region::from_code(c.alpha2()).expect("ISO alpha-2");
            fold_letters(c.name(), &mut key);
            map.insert(key.clone(), region);
            // "Korea, Republic of" and "Bolivia (Plurinational State of)": also the short name.
            if let Some(short) = c.name().split([',', '(']).next() {
                fold_letters(short, &mut key);
                map.entry(key.clone()).or_insert(region);
            }
        }
        for (alias, code) in COUNTRY_ALIASES {
            map.insert(
                alias.to_string(),
                Region::from_code(code).expect("alias code"),
            );
        }
        map
    })
}

/// The country a cleaned value names: an alpha-2 or alpha-3 code in any case, or a name.
pub fn country(cleaned: &str, scratch: &mut String) -> Option<Region> {
    let t = cleaned.trim_end_matches('.');
    if t.len() == 2
        && t.is_ascii()
        && let Some(r) = Region::from_code(t)
    {
        return Some(r);
    }
    if t.len() == 3
        && t.is_ascii()
        && let Ok(c) = isocountry::CountryCode::for_alpha3_caseless(t)
    {
        return Region::from_code(c.alpha2());
    }
    fold_letters(t, scratch);
    if scratch.len() == 3
        && let Ok(c) = isocountry::CountryCode::for_alpha3_caseless(scratch)
    {
        // `U.S.A.`
        return Region::from_code(c.alpha2());
    }
    if scratch.len() == 2
        && let Some(r) = Region::from_code(scratch)
    {
        // `u.s.`
        return Some(r);
    }
    country_names().get(scratch.as_str()).copied()
}

/// US states, districts and territories: code, name, and the abbreviations in common use
/// (AP style, older postal forms).
const US_STATES: &[(&str, &str, &[&str])] = &[
    ("al", "alabama", &["ala"]),
    ("ak", "alaska", &["alas"]),
    ("az", "arizona", &["ariz"]),
    ("ar", "arkansas", &["ark"]),
    ("ca", "california", &["calif", "cal", "cali"]),
    ("co", "colorado", &["colo", "col"]),
    ("ct", "connecticut", &["conn"]),
    ("de", "delaware", &["del"]),
    ("dc", "districtofcolumbia", &["washingtondc"]),
    ("fl", "florida", &["fla", "flor"]),
    ("ga", "georgia", &[]),
    ("hi", "hawaii", &[]),
    ("id", "idaho", &["ida"]),
    ("il", "illinois", &["ill", "ills"]),
    ("in", "indiana", &["ind"]),
    ("ia", "iowa", &[]),
    ("ks", "kansas", &["kan", "kans"]),
    ("ky", "kentucky", &["ken", "kent"]),
    ("la", "louisiana", &[]),
    ("me", "maine", &[]),
    ("md", "maryland", &[]),
    ("ma", "massachusetts", &["mass"]),
    ("mi", "michigan", &["mich"]),
    ("mn", "minnesota", &["minn"]),
    ("ms", "mississippi", &["miss"]),
    ("mo", "missouri", &[]),
    ("mt", "montana", &["mont"]),
    ("ne", "nebraska", &["neb", "nebr"]),
    ("nv", "nevada", &["nev"]),
    ("nh", "newhampshire", &[]),
    ("nj", "newjersey", &[]),
    ("nm", "newmexico", &["nmex"]),
    ("ny", "newyork", &[]),
    ("nc", "northcarolina", &[]),
    ("nd", "northdakota", &["ndak"]),
    ("oh", "ohio", &[]),
    ("ok", "oklahoma", &["okla"]),
    ("or", "oregon", &["ore", "oreg"]),
    ("pa", "pennsylvania", &["penn", "penna"]),
    ("ri", "rhodeisland", &[]),
    ("sc", "southcarolina", &[]),
    ("sd", "southdakota", &["sdak"]),
    ("tn", "tennessee", &["tenn"]),
    ("tx", "texas", &["tex"]),
    ("ut", "utah", &[]),
    ("vt", "vermont", &[]),
    ("va", "virginia", &[]),
    ("wa", "washington", &["wash"]),
    ("wv", "westvirginia", &["wva", "wvirg"]),
    ("wi", "wisconsin", &["wis", "wisc"]),
    ("wy", "wyoming", &["wyo"]),
    ("pr", "puertorico", &[]),
    ("gu", "guam", &[]),
    ("vi", "virginislands", &["usvirginislands"]),
    ("as", "americansamoa", &[]),
    ("mp", "northernmarianaislands", &[]),
];

fn us_state_names() -> &'static HashMap<&'static str, &'static str> {
    static NAMES: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut map = HashMap::new();
        for (code, name, abbreviations) in US_STATES {
            map.insert(*code, *code);
            map.insert(*name, *code);
            for a in *abbreviations {
                map.insert(*a, *code);
            }
        }
        map
    })
}

/// The two-letter code, lowercase, of a US state written as a code, name or abbreviation.
pub fn us_state(cleaned: &str, scratch: &mut String) -> Option<&'static str> {
    fold_letters(cleaned, scratch);
    us_state_names().get(scratch.as_str()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> Option<&'static str> {
        country(s, &mut String::new()).map(|r| match r.as_str() {
            "US" => "US",
            "GB" => "GB",
            "DE" => "DE",
            "KR" => "KR",
            "CI" => "CI",
            "BO" => "BO",
            _ => "other",
        })
    }

    #[test]
    fn countries_by_code_alpha3_and_name() {
        assert_eq!(cc("US"), Some("US"));
        assert_eq!(cc("us"), Some("US"));
        assert_eq!(cc("USA"), Some("US"));
        assert_eq!(cc("U.S.A."), Some("US"));
        assert_eq!(cc("United States"), Some("US"));
        assert_eq!(cc("united states of america"), Some("US"));
        assert_eq!(cc("UK"), Some("GB"));
        assert_eq!(cc("United Kingdom"), Some("GB"));
        assert_eq!(cc("Deutschland"), Some("DE"));
        assert_eq!(cc("DEU"), Some("DE"));
        assert_eq!(cc("Korea, Republic of"), Some("KR"));
        assert_eq!(cc("Côte d'Ivoire"), Some("CI"));
        assert_eq!(cc("Bolivia"), Some("BO"));
        assert_eq!(cc("Atlantis"), None);
        assert_eq!(cc("XX"), None);
    }

    #[test]
    fn alpha2_table_agrees_with_isocountry() {
        for a in 0..128u8 {
            for b in 0..128u8 {
                let code = String::from_utf8(vec![a, b]).unwrap();
                let by_isocountry = code.trim().len() == 2
                    && isocountry::CountryCode::for_alpha2_caseless(code.trim()).is_ok();
                assert_eq!(
                    Region::from_code(&code).is_some(),
                    by_isocountry,
                    "{code:?}"
                );
                if code.trim() == code {
                    assert_eq!(
                        Region::from_ascii_pair(code.as_bytes()),
                        Region::from_code(&code),
                        "{code:?}"
                    );
                }
            }
        }
        assert_eq!(Region::from_code(" gb "), Some(Region(*b"GB")));
        assert_eq!(Region::from_code("Us"), Some(Region(*b"US")));
    }

    #[test]
    fn us_states_by_code_name_and_abbreviation() {
        let mut s = String::new();
        assert_eq!(us_state("Massachusetts", &mut s), Some("ma"));
        assert_eq!(us_state("MA", &mut s), Some("ma"));
        assert_eq!(us_state("Mass.", &mut s), Some("ma"));
        assert_eq!(us_state("Calif.", &mut s), Some("ca"));
        assert_eq!(us_state("new york", &mut s), Some("ny"));
        assert_eq!(us_state("ny", &mut s), Some("ny"));
        assert_eq!(us_state("Ontario", &mut s), None);
    }
}
