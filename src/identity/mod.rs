//! Identity: turning raw PII columns into what platforms match on.
//!
//! `profile` says what each platform wants per identifier kind, `rules` normalizes one value,
//! `phone` and `geo` hold the lookups the rules need, `hash` is the SHA-256 kernel, and `column`
//! runs all of it over whole Arrow batches. Nothing here knows about HTTP or SQL.

pub mod column;
pub mod geo;
pub mod hash;
pub mod phone;
pub mod profile;
pub mod rules;
pub mod sha256x;
pub mod udf;

pub use column::{IdentityPlan, InputColumn, MemberBatch, Tally, transform, transform_pieces};
pub use geo::Region;
pub use profile::{Encoding, Kind, OutputField, Profile, Treatment, output_fields};
pub use rules::Outcome;

/// One value normalized the way a run would, for the `hash` command and the tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Normalized {
    pub kind: Kind,
    pub profile: Profile,
    /// `Ok((normalized, encoded output per output field))`, or the invalid reason.
    pub result: Result<(String, Vec<(String, String)>), String>,
}

/// Normalizes and encodes one value. `country` is the row's country (any form the `country`
/// rule reads), the default region for phone numbers, states and zips.
pub fn normalize_one(profile: Profile, kind: Kind, raw: &str, country: Option<&str>) -> Normalized {
    let mut scratch = rules::Scratch::default();
    let mut value = String::new();
    let region =
        country.and_then(|c| geo::country(rules::clean(c, &mut String::new()), &mut String::new()));
    let ctx = rules::RowContext { region };
    let outcome = rules::normalize(profile, kind, raw, false, ctx, &mut scratch, &mut value);
    let result = match outcome {
        Outcome::Missing => Err("missing".to_string()),
        Outcome::Invalid(reason) => Err(reason.to_string()),
        Outcome::Valid | Outcome::PreHashed => {
            let encoding = profile.encoding();
            let fields = output_fields(profile, kind)
                .into_iter()
                .map(|f| {
                    let part = match f.part {
                        Some((a, b)) => &value[a..b],
                        None => value.as_str(),
                    };
                    let out = match f.treatment {
                        Treatment::Raw => part.to_string(),
                        Treatment::Hashed if outcome == Outcome::PreHashed => {
                            let mut buf = vec![0u8; hash::encoded_len(encoding)];
                            hash::reencode_hex(part.as_bytes(), encoding, &mut buf);
                            String::from_utf8(buf).expect("ascii")
                        }
                        Treatment::Hashed => hash::hash_to_string(part, encoding),
                    };
                    (f.name, out)
                })
                .collect();
            Ok((value.clone(), fields))
        }
    };
    Normalized {
        kind,
        profile,
        result,
    }
}
