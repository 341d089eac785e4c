//! Identifier kinds and normalization profiles, as data.
//!
//! A profile (meta, google, uid2) says, for each identifier kind, whether the platform wants it
//! hashed, sent raw, or not at all, and how hashes are encoded. Everything platform-specific
//! about normalization that is not a string rule lives here, so `rules.rs` can stay a set of
//! small per-kind functions. The table is `shared/spec/identifiers.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What an identifier column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Email,
    Phone,
    FirstName,
    LastName,
    City,
    State,
    Zip,
    Country,
    DateOfBirth,
    Gender,
    MobileAdId,
    ExternalId,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Email,
        Kind::Phone,
        Kind::FirstName,
        Kind::LastName,
        Kind::City,
        Kind::State,
        Kind::Zip,
        Kind::Country,
        Kind::DateOfBirth,
        Kind::Gender,
        Kind::MobileAdId,
        Kind::ExternalId,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::FirstName => "first_name",
            Kind::LastName => "last_name",
            Kind::City => "city",
            Kind::State => "state",
            Kind::Zip => "zip",
            Kind::Country => "country",
            Kind::DateOfBirth => "date_of_birth",
            Kind::Gender => "gender",
            Kind::MobileAdId => "mobile_ad_id",
            Kind::ExternalId => "external_id",
        }
    }

    /// Strong identifiers make a row a member on their own; the others only help matching.
    pub fn is_strong(self) -> bool {
        matches!(
            self,
            Kind::Email | Kind::Phone | Kind::MobileAdId | Kind::ExternalId
        )
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A platform family's normalization rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Meta Custom Audiences; also TikTok and Snap.
    Meta,
    /// Google Customer Match (Data Manager API and Ads API).
    Google,
    /// Unified ID 2.0 (The Trade Desk).
    Uid2,
}

/// How a profile sends one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// SHA-256 of the normalized value, encoded as the profile says.
    Hashed,
    /// The normalized value itself.
    Raw,
}

/// How SHA-256 digests are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// 64 lowercase hex characters.
    Hex,
    /// 44 characters of standard Base64 of the 32 raw bytes.
    Base64,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Meta => "meta",
            Profile::Google => "google",
            Profile::Uid2 => "uid2",
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        [Profile::Meta, Profile::Google, Profile::Uid2]
            .into_iter()
            .find(|p| p.name() == s)
    }

    /// The identifier table's column for this profile; `None` is "n/a".
    pub fn treatment(self, kind: Kind) -> Option<Treatment> {
        use Kind::*;
        use Treatment::*;
        match (self, kind) {
            (Profile::Meta, MobileAdId | ExternalId) => Some(Raw),
            (Profile::Meta, _) => Some(Hashed),
            (Profile::Google, Email | Phone | FirstName | LastName) => Some(Hashed),
            (Profile::Google, Zip | Country | MobileAdId | ExternalId) => Some(Raw),
            (Profile::Google, City | State | DateOfBirth | Gender) => None,
            (Profile::Uid2, Email | Phone) => Some(Hashed),
            (Profile::Uid2, MobileAdId) => Some(Raw),
            (Profile::Uid2, _) => None,
        }
    }

    pub fn encoding(self) -> Encoding {
        match self {
            Profile::Uid2 => Encoding::Base64,
            Profile::Meta | Profile::Google => Encoding::Hex,
        }
    }

    /// Kinds this profile accepts, for error messages.
    pub fn kinds(self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| self.treatment(*k).is_some())
            .collect()
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One column of the output: a kind, or a part of one (Meta splits a date of birth in three).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputField {
    pub kind: Kind,
    /// Byte range of the normalized value this field takes (the whole value when `None`).
    pub part: Option<(usize, usize)>,
    pub treatment: Treatment,
    /// `<kind>_sha256` for hashed fields, `<kind>` for raw ones.
    pub name: String,
}

/// The output fields of one kind under a profile, in output order.
pub fn output_fields(profile: Profile, kind: Kind) -> Vec<OutputField> {
    let Some(treatment) = profile.treatment(kind) else {
        return vec![];
    };
    let named = |base: &str, part| OutputField {
        kind,
        part,
        treatment,
        name: match treatment {
            Treatment::Hashed => format!("{base}_sha256"),
            Treatment::Raw => base.to_string(),
        },
    };
    if kind == Kind::DateOfBirth {
        // Normalized as YYYYMMDD; Meta wants DOBY, DOBM and DOBD hashed separately.
        return vec![
            named("doby", Some((0, 4))),
            named("dobm", Some((4, 6))),
            named("dobd", Some((6, 8))),
        ];
    }
    vec![named(kind.name(), None)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
    }

    #[test]
    fn google_sends_zip_and_country_raw_and_has_no_city() {
        assert_eq!(Profile::Google.treatment(Kind::Zip), Some(Treatment::Raw));
        assert_eq!(
            Profile::Google.treatment(Kind::Country),
            Some(Treatment::Raw)
        );
        assert_eq!(Profile::Google.treatment(Kind::City), None);
        assert_eq!(output_fields(Profile::Google, Kind::Zip)[0].name, "zip");
    }

    #[test]
    fn meta_splits_date_of_birth() {
        let names: Vec<_> = output_fields(Profile::Meta, Kind::DateOfBirth)
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["doby_sha256", "dobm_sha256", "dobd_sha256"]);
        assert_eq!(
            output_fields(Profile::Meta, Kind::MobileAdId)[0].name,
            "mobile_ad_id"
        );
    }

    #[test]
    fn uid2_is_base64_email_and_phone_only() {
        assert_eq!(Profile::Uid2.encoding(), Encoding::Base64);
        assert_eq!(
            Profile::Uid2.kinds(),
            [Kind::Email, Kind::Phone, Kind::MobileAdId]
        );
    }
}
