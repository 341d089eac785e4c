//! The request body of a batch: the job's minijinja template rendered with `members` (one object
//! per member, its columns by name: hashes, raw values the profile keeps, consent flags),
//! `batch_seq`, `op` (`add` or `remove`), `run_date` and `job`. Undefined values are errors, so
//! a misspelt column fails when the job is loaded, not in the middle of a run.

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::DataType;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde_json::Map;
use std::sync::Arc;

/// A compiled body template.
#[derive(Clone, Debug)]
pub struct BodyTemplate {
    env: Arc<Environment<'static>>,
}

/// What a batch's body is rendered with.
pub struct BodyContext<'a> {
    pub job: &'a str,
    pub run_date: &'a str,
    pub op: &'a str,
    pub batch_seq: u64,
}

/// `tojson`: the value as JSON text (the `json` feature of minijinja, which has it, is off).
/// Strict undefined values reach filters unchecked, so this one refuses them itself.
fn tojson(value: &Value) -> Result<Value, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::from(minijinja::ErrorKind::UndefinedError));
    }
    serde_json::to_string(value)
        .map(Value::from_safe_string)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

fn describe(e: &minijinja::Error) -> String {
    let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    format!(
        "template error{line}: {}{detail}; available: members (a list of objects of the member's columns), \
         batch_seq, op, run_date, job; filter tojson",
        e.kind()
    )
}

impl BodyTemplate {
    pub fn new(source: &str) -> Result<BodyTemplate, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("tojson", tojson);
        env.add_template_owned("body", source.to_string())
            .map_err(|e| describe(&e))?;
        Ok(BodyTemplate { env: Arc::new(env) })
    }

    /// Renders once with a member holding every column, so undefined names show at load time.
    pub fn check(&self, job: &str, columns: &[String]) -> Result<(), String> {
        let member: Map<String, serde_json::Value> = columns
            .iter()
            .map(|c| (c.clone(), serde_json::Value::String("0".repeat(64))))
            .collect();
        let context = BodyContext {
            job,
            run_date: "2026-01-01",
            op: "add",
            batch_seq: 1,
        };
        self.render_members(&context, vec![member])
            .map(|_| ())
            .map_err(|e| format!("{e}; a member's columns: {}", columns.join(", ")))
    }

    pub fn render(&self, context: &BodyContext, batch: &RecordBatch) -> Result<String, String> {
        self.render_members(context, members(batch))
    }

    fn render_members(
        &self,
        context: &BodyContext,
        members: Vec<Map<String, serde_json::Value>>,
    ) -> Result<String, String> {
        let template = self.env.get_template("body").map_err(|e| describe(&e))?;
        template
            .render(minijinja::context! {
                members => Value::from_serialize(&members),
                batch_seq => context.batch_seq,
                op => context.op,
                run_date => context.run_date,
                job => context.job,
            })
            .map_err(|e| describe(&e))
    }
}

/// Each member as an object of its columns; missing values are `none` (`null` through tojson).
fn members(batch: &RecordBatch) -> Vec<Map<String, serde_json::Value>> {
    let schema = batch.schema();
    let mut out = vec![Map::new(); batch.num_rows()];
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        for (row, member) in out.iter_mut().enumerate() {
            let value = if column.is_null(row) {
                serde_json::Value::Null
            } else {
                match field.data_type() {
                    DataType::Utf8 => column.as_string::<i32>().value(row).into(),
                    DataType::Boolean => column
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .map_or(serde_json::Value::Null, |b| b.value(row).into()),
                    _ => serde_json::Value::Null,
                }
            };
            member.insert(field.name().clone(), value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};

    #[test]
    fn renders_members_and_the_batch() {
        let t = BodyTemplate::new(
            r#"{"op": {{ op | tojson }}, "seq": {{ batch_seq }}, "emails": {{ members | map(attribute="email_sha256") | list | tojson }}, "phones": {{ members | map(attribute="phone_sha256") | list | tojson }}}"#,
        )
        .unwrap();
        let batch = RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(vec!["e1", "e\"2"])) as ArrayRef,
            ),
            (
                "phone_sha256",
                Arc::new(StringArray::from(vec![Some("p1"), None])) as ArrayRef,
            ),
        ])
        .unwrap();
        let context = BodyContext {
            job: "j",
            run_date: "2026-11-25",
            op: "remove",
            batch_seq: 3,
        };
        let body: serde_json::Value =
            serde_json::from_str(&t.render(&context, &batch).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"op": "remove", "seq": 3, "emails": ["e1", "e\"2"], "phones": ["p1", null]})
        );
    }

    #[test]
    fn undefined_columns_and_syntax_errors_are_caught_before_a_run() {
        let columns = vec!["email_sha256".to_string()];
        let t = BodyTemplate::new("{% for m in members %}{{ m.email }}{% endfor %}").unwrap();
        let e = t.check("j", &columns).unwrap_err();
        assert!(e.contains("undefined") && e.contains("line 1"), "{e}");
        let ok =
            BodyTemplate::new("{% for m in members %}{{ m.email_sha256 }}{% endfor %}").unwrap();
        assert!(ok.check("j", &columns).is_ok());
        let e = BodyTemplate::new("{{ members | tojson ").unwrap_err();
        assert!(e.contains("syntax"), "{e}");
    }
}
