//! Member batches to `CustomerListUserData/Apply` bodies, and the other bodies the connector
//! sends. Customer Match takes one kind of item per call, hashed e-mails (`CustomerListItemSubType:
//! Email`), each a SHA-256 in lowercase hex; members without an e-mail are taken out of the
//! stream before it is cut into batches, so that each call carries up to 1,000 e-mails and a
//! replace's first call is never empty. Hashes are de-duplicated within a call; Microsoft's
//! `PartialErrors` point at items by their index in the list sent, which the sink keeps.
//!
//! JSON longs (`AudienceId`, `ParentId`) are sent as strings, as Microsoft's REST SDK (`msads`)
//! sends them.

use crate::destinations::ids::{IdColumn, IdKind};
use crate::error::{Error, Result};
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What an Apply call does to the list (`CustomerListActionType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
    /// "All previous customer match data for this list will be removed", then the items added.
    Replace,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Add => "Add",
            Action::Remove => "Remove",
            Action::Replace => "Replace",
        }
    }
}

/// The member column a batch's items come from.
#[derive(Clone, Debug)]
pub struct ItemsEncoder {
    email: IdColumn,
}

impl ItemsEncoder {
    pub fn new(schema: &SchemaRef) -> Result<ItemsEncoder> {
        match IdColumn::find(schema, IdKind::Email) {
            Some(email) => Ok(ItemsEncoder { email }),
            None => Err(Error::config(
                "microsoft: map identifiers.email (Customer Match lists take hashed e-mails only)",
            )),
        }
    }

    /// A batch's distinct e-mail hashes, in the order they come.
    pub fn items(&self, batch: &RecordBatch) -> Vec<String> {
        let mut seen = HashSet::with_capacity(batch.num_rows());
        let mut items = Vec::with_capacity(batch.num_rows());
        self.email.each_hash(batch, |_, hash| {
            if seen.insert(hash.to_string()) {
                items.push(hash.to_string());
            }
        });
        items
    }
}

/// The members that have an e-mail, the others counted in `without_email` and dropped, as are
/// batches left empty.
pub fn with_email_only(
    members: BoxStream<'static, Result<RecordBatch>>,
    without_email: Arc<AtomicU64>,
) -> BoxStream<'static, Result<RecordBatch>> {
    members
        .filter_map(move |batch| {
            let without_email = without_email.clone();
            async move {
                let kept = batch.and_then(|b| keep_rows_with_email(&b, &without_email));
                match kept {
                    Ok(b) if b.num_rows() == 0 => None,
                    other => Some(other),
                }
            }
        })
        .boxed()
}

fn keep_rows_with_email(batch: &RecordBatch, without_email: &AtomicU64) -> Result<RecordBatch> {
    let Some(column) = batch.column_by_name(IdKind::Email.column()) else {
        without_email.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        return Ok(batch.slice(0, 0));
    };
    if column.null_count() == 0 {
        return Ok(batch.clone());
    }
    without_email.fetch_add(column.null_count() as u64, Ordering::Relaxed);
    let has_email = arrow::compute::is_not_null(column)?;
    Ok(arrow::compute::filter_record_batch(batch, &has_email)?)
}

/// The body of `CustomerListUserData/Apply`. `AcceptCustomerMatchTerm` is sent only to accept:
/// `false` would refuse every call (error 8003), and leaving it out defers to the terms accepted
/// in the Microsoft Advertising UI.
pub fn apply_body(
    action: Action,
    audience_id: &str,
    items: &[String],
    accept_terms: bool,
) -> Value {
    let mut data = json!({
        "ActionType": action.name(),
        "AudienceId": audience_id,
        "CustomerListItemSubType": "Email",
        "CustomerListItems": items,
    });
    if accept_terms {
        data["AcceptCustomerMatchTerm"] = json!(true);
    }
    json!({ "CustomerListUserData": data })
}

/// The body of `Audiences/QueryByIds` that asks for every customer list of the account.
pub fn customer_lists_query() -> Value {
    json!({ "AudienceIds": null, "Type": "CustomerList" })
}

/// The body of `Audiences` (AddAudiences) creating one customer list, scoped to the customer
/// (the only scope a customer list takes).
pub fn new_customer_list(name: &str, customer_id: &str, membership_duration: i32) -> Value {
    json!({ "Audiences": [{
        "Type": "CustomerList",
        "Name": name,
        "Description": "Managed by activator",
        "Scope": "Customer",
        "ParentId": customer_id,
        "MembershipDuration": membership_duration,
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};

    fn members(emails: Vec<Option<&str>>) -> RecordBatch {
        let phones: Vec<Option<&str>> = emails.iter().map(|_| Some("p")).collect();
        RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(emails)) as ArrayRef,
            ),
            (
                "phone_sha256",
                Arc::new(StringArray::from(phones)) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn items_are_the_distinct_email_hashes() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let batch = members(vec![Some(a.as_str()), Some(b.as_str()), Some(a.as_str())]);
        let items = ItemsEncoder::new(&batch.schema()).unwrap().items(&batch);
        assert_eq!(items, [a.clone(), b]);
        let body = apply_body(Action::Replace, "821", &items[..1], true);
        assert_eq!(
            body,
            json!({"CustomerListUserData": {
                "ActionType": "Replace", "AudienceId": "821", "CustomerListItemSubType": "Email",
                "CustomerListItems": [a], "AcceptCustomerMatchTerm": true,
            }})
        );
        let without_terms = apply_body(Action::Add, "821", &items, false);
        assert!(without_terms["CustomerListUserData"]["AcceptCustomerMatchTerm"].is_null());
    }

    #[tokio::test]
    async fn members_without_an_email_are_counted_and_dropped() {
        let a = "a".repeat(64);
        let stream = futures::stream::iter(vec![
            Ok(members(vec![Some(a.as_str()), None])),
            Ok(members(vec![None])),
        ])
        .boxed();
        let without = Arc::new(AtomicU64::new(0));
        let kept: Vec<RecordBatch> = with_email_only(stream, without.clone())
            .map(|b| b.unwrap())
            .collect()
            .await;
        assert_eq!(kept.len(), 1, "the batch left empty is dropped");
        assert_eq!(kept[0].num_rows(), 1);
        assert_eq!(without.load(Ordering::Relaxed), 2);
    }
}
