//! The identity transform as a DataFusion function, for engines where it must run inside the
//! query: on a Ballista cluster (`crate::cluster`), the executors normalize and hash where the
//! data is, and only hashed members and counts travel back to the driver.
//!
//! `activator_members('<plan>', col, ...)` takes the identity plan as a JSON literal (profile,
//! identifier kinds and columns, default region: no value of any row) and the identifier
//! columns in the plan's order. It returns, for every row, a struct of the plan's output
//! columns (null where the row is not a member), whether the row is a member, and what the
//! run's tally counts of it (`column::transform_rows`). `members_of` turns such batches back
//! into the `MemberBatch`es the local engine's transform gives, with the same members, keys
//! and tally, so everything after the transform is the same for both engines.

use super::column::{IdentityPlan, InputColumn, MemberBatch, Tally, member_key, transform_rows};
use super::{Kind, Profile, Region};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The function's name in SQL and in serialized plans.
pub const NAME: &str = "activator_members";
const MEMBER: &str = "activator_member";
const NOTES: &str = "activator_notes";

/// The identity plan as the function's first argument carries it.
#[derive(Serialize, Deserialize)]
struct PlanSpec {
    profile: String,
    default_region: Option<String>,
    /// (kind, column, hashed already)
    inputs: Vec<(String, String, bool)>,
}

fn spec_of(plan: &IdentityPlan) -> String {
    let spec = PlanSpec {
        profile: plan.profile.name().to_string(),
        default_region: plan.default_region.map(|r| r.as_str().to_string()),
        inputs: plan
            .inputs
            .iter()
            .map(|i| (i.kind.name().to_string(), i.column.clone(), i.hashed))
            .collect(),
    };
    serde_json::to_string(&spec).expect("a plan spec serializes")
}

fn plan_of(spec: &str) -> datafusion::common::Result<IdentityPlan> {
    let bad = |what: &str| {
        DataFusionError::Plan(format!(
            "{NAME}: {what} in its plan argument; this executor may run another activator version than the driver"
        ))
    };
    let spec: PlanSpec = serde_json::from_str(spec).map_err(|_| bad("unreadable JSON"))?;
    let profile = Profile::parse(&spec.profile).ok_or_else(|| bad("an unknown profile"))?;
    let default_region = match spec.default_region {
        Some(code) => Some(Region::from_code(&code).ok_or_else(|| bad("an unknown region"))?),
        None => None,
    };
    let inputs = spec
        .inputs
        .into_iter()
        .map(|(kind, column, hashed)| {
            let kind = Kind::parse(&kind).ok_or_else(|| bad("an unknown identifier kind"))?;
            Ok(InputColumn {
                kind,
                column,
                hashed,
            })
        })
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    Ok(IdentityPlan::new(profile, inputs, default_region, vec![]))
}

/// The struct the function returns for `plan`.
fn struct_fields(plan: &IdentityPlan) -> Fields {
    let mut fields: Vec<Field> = plan
        .output_fields()
        .map(|f| Field::new(&f.name, DataType::Utf8, true))
        .collect();
    fields.push(Field::new(MEMBER, DataType::Boolean, false));
    fields.push(Field::new(NOTES, DataType::Utf8, true));
    Fields::from(fields)
}

/// `activator_members`; see the module's doc.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MembersFunction {
    signature: Signature,
}

impl Default for MembersFunction {
    fn default() -> Self {
        MembersFunction {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// The function, to register with a session (driver, scheduler or executor).
pub fn function() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(MembersFunction::default()))
}

/// What the query selects on a cluster: `activator_members(...)` over the segment's result, then
/// the plan's passthrough columns, each once (`members_of` reads them by name).
pub fn selection(plan: &IdentityPlan) -> Vec<Expr> {
    let mut args = vec![Expr::Literal(ScalarValue::Utf8(Some(spec_of(plan))), None)];
    args.extend(plan.inputs.iter().map(|i| column(&i.column)));
    let mut selected = vec![function().call(args).alias(NAME)];
    let mut names: Vec<&String> = plan.passthrough.iter().collect();
    names.sort();
    names.dedup();
    selected.extend(names.into_iter().map(|name| column(name)));
    selected
}

/// A column of the segment's result by its exact name (no parsing of dots or quotes).
fn column(name: &str) -> Expr {
    Expr::Column(datafusion::common::Column::new_unqualified(name))
}

fn spec_argument(value: Option<&ScalarValue>) -> datafusion::common::Result<&str> {
    match value {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => Ok(s),
        _ => Err(DataFusionError::Plan(format!(
            "{NAME} takes the identity plan as a text literal first"
        ))),
    }
}

impl ScalarUDFImpl for MembersFunction {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Err(DataFusionError::Internal(format!(
            "{NAME}'s type depends on its plan argument (return_field_from_args)"
        )))
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        let spec = spec_argument(args.scalar_arguments.first().copied().flatten())?;
        let plan = plan_of(spec)?;
        Ok(Arc::new(Field::new(
            NAME,
            DataType::Struct(struct_fields(&plan)),
            false,
        )))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let spec = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => spec_argument(Some(s))?,
            _ => spec_argument(None)?,
        };
        let plan = plan_of(spec)?;
        if args.args.len() != plan.inputs.len() + 1 {
            return Err(DataFusionError::Plan(format!(
                "{NAME}: {} identifier columns for a plan of {}",
                args.args.len() - 1,
                plan.inputs.len()
            )));
        }
        let columns = args.args[1..]
            .iter()
            .map(|a| a.to_array(args.number_rows))
            .collect::<datafusion::common::Result<Vec<ArrayRef>>>()?;
        let schema = Schema::new(
            plan.inputs
                .iter()
                .zip(&columns)
                .map(|(i, c)| Field::new(&i.column, c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        let batch = RecordBatch::try_new(Arc::new(schema), columns)?;
        let rows = rows_in_pieces(&plan, &batch)?;
        Ok(ColumnarValue::Array(Arc::new(rows)))
    }
}

/// `transform_rows` over a batch of any size, in pieces within its limits (as the local engine's
/// `transform_pieces`), joined back into one struct array.
fn rows_in_pieces(
    plan: &IdentityPlan,
    batch: &RecordBatch,
) -> Result<StructArray, arrow::error::ArrowError> {
    let pieces = super::column::in_pieces(plan, batch, &|piece| {
        let rows = transform_rows(plan, piece)?;
        let mut columns = rows.columns;
        columns.push(Arc::new(rows.is_member));
        columns.push(Arc::new(rows.notes));
        StructArray::try_new(struct_fields(plan), columns, None)
    })?;
    match pieces.as_slice() {
        [one] => Ok(one.clone()),
        many => {
            let arrays: Vec<&dyn Array> = many.iter().map(|a| a as &dyn Array).collect();
            Ok(arrow::compute::concat(&arrays)?.as_struct().clone())
        }
    }
}

/// The members of a batch of `selection(plan)`: what `column::transform` gives for the
/// segment's rows.
pub fn members_of(
    plan: &IdentityPlan,
    batch: &RecordBatch,
) -> Result<MemberBatch, arrow::error::ArrowError> {
    let unexpected = || {
        arrow::error::ArrowError::SchemaError(format!(
            "the cluster's result is not {NAME}'s: this executor may run another activator version than the driver"
        ))
    };
    let rows = batch
        .column_by_name(NAME)
        .and_then(|c| c.as_struct_opt())
        .ok_or_else(unexpected)?;
    let outputs = plan.output_fields().count();
    let flags = rows
        .column_by_name(MEMBER)
        .and_then(|c| c.as_boolean_opt())
        .ok_or_else(unexpected)?;
    let notes = rows
        .column_by_name(NOTES)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(unexpected)?;
    // A row is a member when its flag says so (a null struct or flag is none).
    let mut is_member = flags.values().clone();
    for nulls in [flags.nulls(), rows.nulls()].into_iter().flatten() {
        is_member = &is_member & nulls.inner();
    }
    let is_member = arrow::array::BooleanArray::new(is_member, None);
    let mut columns = (0..outputs)
        .map(|i| arrow::compute::filter(rows.column(i), &is_member))
        .collect::<Result<Vec<_>, _>>()?;
    let members = is_member.true_count();
    let keys = member_key(&columns, members);
    // The passthrough columns by name: one column may serve two consent roles, and the query
    // selects it once (`call_with`).
    for name in &plan.passthrough {
        let column = batch.column_by_name(name).ok_or_else(unexpected)?;
        columns.push(arrow::compute::filter(column, &is_member)?);
    }
    let mut tally = Tally {
        rows: batch.num_rows() as u64,
        members: members as u64,
        without_strong_identifier: (batch.num_rows() - members) as u64,
        ..Tally::default()
    };
    for note in notes.iter().flatten() {
        for entry in note.split('\n') {
            if entry == "pre_hashed" {
                tally.pre_hashed += 1;
            } else {
                *tally.invalid.entry(entry.to_string()).or_default() += 1;
            }
        }
    }
    let batch = RecordBatch::try_new(plan.output_schema(), columns)?;
    // The executors send text only: members files decode it (`state::digests`).
    Ok(MemberBatch {
        batch,
        keys,
        tally,
        digests: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::transform;
    use arrow::array::{BooleanArray, StringArray};
    use datafusion::prelude::SessionContext;

    fn plan() -> IdentityPlan {
        IdentityPlan::new(
            Profile::Meta,
            vec![
                InputColumn::new(Kind::Email, "email"),
                InputColumn::new(Kind::Phone, "phone"),
                InputColumn::new(Kind::FirstName, "first_name"),
                InputColumn::new(Kind::Country, "country"),
            ],
            Region::from_code("US"),
            vec![("consent".into(), DataType::Boolean)],
        )
    }

    fn rows() -> RecordBatch {
        let text = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
        RecordBatch::try_from_iter(vec![
            (
                "email",
                text(vec![
                    Some(" Jane.Doe@Example.com "),
                    Some("not an e-mail"),
                    None,
                    Some("a@b.co"),
                    Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
                ]),
            ),
            (
                "phone",
                text(vec![Some("(650) 555-1234"), Some("12"), None, None, None]),
            ),
            (
                "first_name",
                text(vec![Some("Jane"), Some("Bob"), Some("Al"), None, None]),
            ),
            (
                "country",
                text(vec![Some("us"), Some("Narnia"), None, Some("GB"), None]),
            ),
            (
                "consent",
                Arc::new(BooleanArray::from(vec![true, false, true, true, false])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[tokio::test]
    async fn the_function_in_a_query_gives_the_members_keys_and_counts_of_the_transform() {
        let plan = plan();
        let ctx = SessionContext::new();
        ctx.register_udf(function().as_ref().clone());
        ctx.register_batch("segment", rows()).unwrap();
        let df = ctx
            .table("segment")
            .await
            .unwrap()
            .select(selection(&plan))
            .unwrap();
        let batches = df.collect().await.unwrap();
        let by_query = members_of(&plan, &batches[0]).unwrap();
        let local = transform(&plan, &rows()).unwrap();
        assert_eq!(by_query.batch, local.batch);
        assert_eq!(by_query.keys, local.keys);
        assert_eq!(by_query.tally, local.tally);
        assert_eq!(local.tally.members, 3);
        // One column may serve two consent roles.
        let mut plan = plan.clone();
        plan = IdentityPlan::new(
            plan.profile,
            plan.inputs.clone(),
            plan.default_region,
            vec![
                ("consent".into(), DataType::Boolean),
                ("consent".into(), DataType::Boolean),
            ],
        );
        let batches = ctx
            .table("segment")
            .await
            .unwrap()
            .select(selection(&plan))
            .unwrap()
            .collect()
            .await
            .unwrap();
        let by_query = members_of(&plan, &batches[0]).unwrap();
        assert_eq!(by_query.batch, transform(&plan, &rows()).unwrap().batch);
        assert!(local.tally.pre_hashed == 1 && !local.tally.invalid.is_empty());
    }

    #[test]
    fn a_plan_from_another_version_is_refused_clearly() {
        let err = plan_of(r#"{"profile":"myspace","default_region":null,"inputs":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown profile"), "{err}");
        assert!(err.contains("another activator version"), "{err}");
    }
}
