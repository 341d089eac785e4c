//! Member batches to Data Manager request bodies (proto3 JSON: lowerCamelCase, enums by name).

use super::config::GoogleConfig;
use crate::error::{Error, Result};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use serde_json::{Value, json};

/// Where each identifier comes from in a member batch.
#[derive(Clone, Debug)]
pub struct MemberEncoder {
    email: Option<usize>,
    phone: Option<usize>,
    given: Option<usize>,
    family: Option<usize>,
    region: Option<usize>,
    postal: Option<usize>,
    ad_user_data: Option<usize>,
    ad_personalization: Option<usize>,
}

impl MemberEncoder {
    /// `consent_columns` names the job's consent columns by role (`ad_user_data`, ...).
    pub fn new(schema: &SchemaRef, consent_columns: &[(String, String)]) -> Result<MemberEncoder> {
        let find = |name: &str| {
            schema
                .index_of(name)
                .ok()
                .filter(|&i| schema.field(i).data_type() == &DataType::Utf8)
        };
        let consent = |role: &str| {
            consent_columns
                .iter()
                .find(|(r, _)| r == role)
                .and_then(|(_, c)| schema.index_of(c).ok())
        };
        let e = MemberEncoder {
            email: find("email_sha256"),
            phone: find("phone_sha256"),
            given: find("first_name_sha256"),
            family: find("last_name_sha256"),
            region: find("country"),
            postal: find("zip"),
            ad_user_data: consent("ad_user_data"),
            ad_personalization: consent("ad_personalization"),
        };
        if e.email.is_none() && e.phone.is_none() && e.address_columns().is_none() {
            return Err(Error::config(
                "google: map email, phone, or first_name + last_name + country + zip (Customer Match contact info)",
            ));
        }
        Ok(e)
    }

    fn address_columns(&self) -> Option<[usize; 4]> {
        Some([self.given?, self.family?, self.region?, self.postal?])
    }

    /// The `audienceMembers` array of a batch, and how many rows had no usable identifier.
    pub fn members(&self, batch: &RecordBatch) -> (Vec<Value>, u64) {
        let s = |i: Option<usize>| i.map(|i| batch.column(i).as_string::<i32>());
        let b = |i: Option<usize>| {
            i.and_then(|i| batch.column(i).as_any().downcast_ref::<BooleanArray>())
        };
        let (email, phone) = (s(self.email), s(self.phone));
        let address: Option<[&StringArray; 4]> = self
            .address_columns()
            .map(|cols| cols.map(|i| batch.column(i).as_string::<i32>()));
        let (aud, ap) = (b(self.ad_user_data), b(self.ad_personalization));
        let mut out = Vec::with_capacity(batch.num_rows());
        let mut skipped = 0;
        for row in 0..batch.num_rows() {
            let mut ids = vec![];
            if let Some(v) = value(email, row) {
                ids.push(json!({"emailAddress": v}));
            }
            if let Some(v) = value(phone, row) {
                ids.push(json!({"phoneNumber": v}));
            }
            if let Some(cols) = &address
                && cols.iter().all(|c| c.is_valid(row))
            {
                ids.push(json!({"address": {
                    "givenName": cols[0].value(row), "familyName": cols[1].value(row),
                    "regionCode": cols[2].value(row), "postalCode": cols[3].value(row),
                }}));
            }
            if ids.is_empty() {
                skipped += 1;
                continue;
            }
            let mut member = json!({"userData": {"userIdentifiers": ids}});
            let status = |a: Option<&BooleanArray>| {
                a.filter(|a| a.is_valid(row)).map(|a| {
                    if a.value(row) {
                        "CONSENT_GRANTED"
                    } else {
                        "CONSENT_DENIED"
                    }
                })
            };
            let mut consent = serde_json::Map::new();
            if let Some(s) = status(aud) {
                consent.insert("adUserData".into(), s.into());
            }
            if let Some(s) = status(ap) {
                consent.insert("adPersonalization".into(), s.into());
            }
            if !consent.is_empty() {
                member["consent"] = Value::Object(consent);
            }
            out.push(member);
        }
        (out, skipped)
    }
}

fn value(a: Option<&StringArray>, row: usize) -> Option<&str> {
    a.filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

/// The destination object every request carries.
pub fn destination(config: &GoogleConfig, user_list_id: &str) -> Value {
    let mut d = json!({
        "operatingAccount": {"accountType": config.account_type, "accountId": config.account_id},
        "productDestinationId": user_list_id,
    });
    if let Some(login) = &config.login_account_id {
        d["loginAccount"] = json!({"accountType": config.account_type, "accountId": login});
    }
    d
}

/// The body of `audienceMembers:ingest` (or `:remove` when `ingest` is false).
pub fn body(
    config: &GoogleConfig,
    destination: &Value,
    members: Vec<Value>,
    ingest: bool,
) -> Value {
    let mut body = json!({
        "destinations": [destination],
        "audienceMembers": members,
        "encoding": "HEX",
    });
    if ingest {
        body["termsOfService"] = json!({"customerMatchTermsOfServiceStatus": "ACCEPTED"});
        let mut consent = serde_json::Map::new();
        if let Some(c) = config.ad_user_data {
            consent.insert("adUserData".into(), c.api_name().into());
        }
        if let Some(c) = config.ad_personalization {
            consent.insert("adPersonalization".into(), c.api_name().into());
        }
        if !consent.is_empty() {
            body["consent"] = Value::Object(consent);
        }
    }
    body
}
