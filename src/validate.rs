//! `activator validate`: parses jobs and plans their SQL against the tables' schemas, without
//! running them.

use crate::error::Result;
use crate::job::Job;
use crate::segment;
use chrono::NaiveDate;
use std::path::Path;

/// What a valid job plans to.
pub struct Validated {
    pub job: Job,
    /// The segment's result columns with their types.
    pub columns: Vec<(String, String)>,
}

pub async fn validate(path: &Path, run_date: NaiveDate) -> Result<Validated> {
    let job = Job::load(path)?;
    let budget = crate::memory::Budget::of_this_process()?;
    let ctx = segment::context(&job, &segment::Engine::Local, &budget).await?;
    let sql = segment::render(&job, run_date)?;
    let df = segment::plan(&ctx, &job, &sql).await?;
    let columns = df
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    Ok(Validated { job, columns })
}
