//! A fast reader of `audienceMembers` request bodies in the shape clients write them: JSON,
//! compact or spaced, whose keys and identifier values hold no escapes. It folds members into
//! `Members` through the same functions as the serde reader, so what it reads it reads alike;
//! fields it does not know it skips with serde's own skipping, and other values (destinations,
//! consent, ...) `serde_json` reads. On anything else (an escape where it reads a string itself,
//! a field given twice, a value of another type, nesting near serde's limit) it gives up, and
//! the serde reader decides the body. (serde's visitors, one layer per level of a member, were
//! about half of the emulator's time in a large upload.)

use super::{AddressIn, IdentifierIn, Identifiers, Members, MembersRequest};
use crate::sandbox::json_reader::Reader;
use crate::sandbox::state::MemberBatch;
use serde_json::Value;

/// Reads a request body, or `None` to leave it to the serde reader. Values other than the
/// members (destinations, consent, ...) are small and read by `serde_json` itself.
pub(super) fn request(text: &str) -> Option<MembersRequest> {
    let mut r = Reader::new(text);
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
    r.at_end().then_some(request)
}

fn members(r: &mut Reader) -> Option<Members> {
    // A packed member is never longer than its JSON (keys in a byte, hashes in binary, other
    // strings as they came), and a member's JSON is over 128 bytes unless it has one
    // identifier: room for that up front, rather than buffers grown and copied as they fill.
    // (Room for 64 bytes a member, up to 10,000 members, was too little for the members
    // activator sends: growing it was 1.6% of the emulator's samples.) Pages reserved and not
    // written cost nothing.
    let rest = r.rest();
    let mut members = Members {
        canonical: MemberBatch::with_capacity((rest / 128).min(super::MAX_MEMBERS), rest),
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
