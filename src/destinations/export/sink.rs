//! The export pipeline: members, cut into batches, written to files, committed at the end.
//!
//! `per_run` writes one file, `{job}-{date}.{ext}`, as a single upload that completes only when
//! the run does. `per_batch` writes `part-NNNNN.{ext}` files into a staging folder and moves them
//! into `{job}-{date}/` when every batch is written, replacing what an earlier run of the same
//! date left there, then writes `_SUCCESS` (a manifest of the parts): readers that wait for it
//! never see a folder half moved; the staging folders of earlier runs of the date (killed, so
//! unable to remove their own) go then too. Either way a rerun for the same date overwrites,
//! never duplicates.

use super::config::{Export, ExportLayout};
use super::writer::FileWriter;
use crate::batch;
use crate::destinations::{RUN_ID_TIME, RunInfo, SinkReport};
use crate::direct::STALE_AFTER;
use crate::error::Result;
use crate::storage;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;

/// The marker of a complete `per_batch` folder, as Hadoop and Spark write it (and skip when
/// reading, with other `_` files): a JSON manifest of the run and its parts.
pub const SUCCESS: &str = "_SUCCESS";

pub async fn run(
    config: &Export,
    run: &RunInfo,
    schema: SchemaRef,
    mut members: BoxStream<'static, Result<RecordBatch>>,
) -> Result<SinkReport> {
    let (store, folder) = storage::store_for(&config.url)?;
    let mut report = SinkReport {
        destination: config.name.clone(),
        ..SinkReport::default()
    };
    // Batches are cut without copying: slices go straight into the open file, so memory holds a
    // row group, not a batch (an export's batch may be a million rows).
    let mut cutter = batch::Batcher::new(config.batch);
    let stem = format!("{}-{}", run.job, run.run_date);
    match config.layout {
        ExportLayout::PerRun => {
            let path = folder
                .clone()
                .join(format!("{stem}.{}", config.format.extension()));
            write_one_file(
                &store,
                &path,
                config,
                schema,
                members,
                &mut cutter,
                &mut report,
            )
            .await?;
            report.outputs.push(display(&config.url, &folder, &path));
        }
        ExportLayout::PerBatch => {
            let staging = folder
                .clone()
                .join(format!("_staging-{stem}-{}", run.run_id));
            let result = write_parts(
                &store,
                &staging,
                config,
                schema,
                &mut members,
                &mut cutter,
                &mut report,
            )
            .await;
            if let Err(e) = result {
                remove_prefix(&store, &staging).await.ok();
                return Err(e.context(format!("export to {}", config.url)));
            }
            let target = folder.clone().join(stem.as_str());
            let parts = move_parts(&store, &staging, &target, config, run, &report)
                .await
                .map_err(|e| {
                    e.context(format!(
                        "export to {}: moving the parts into {stem}/, whose earlier files may be \
                         gone and which has no {SUCCESS} marker: rerun the date",
                        config.url
                    ))
                })?;
            let moved = parts.iter().map(|to| display(&config.url, &folder, to));
            report.outputs.extend(moved);
            remove_prefix(&store, &staging).await.ok();
            sweep_staging(&store, &folder, &stem).await;
        }
    }
    Ok(report)
}

/// `per_run`: the members into one file at `path`, which appears only once all are written
/// (else the upload begun is aborted and no file appears).
async fn write_one_file(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    config: &Export,
    schema: SchemaRef,
    mut members: BoxStream<'static, Result<RecordBatch>>,
    cutter: &mut batch::Batcher,
    report: &mut SinkReport,
) -> Result<()> {
    let local = storage::local_path(&config.url, path);
    let mut file = FileWriter::create(store.clone(), path.clone(), local, config.format, schema)?;
    let written = async {
        let mut open = false;
        while let Some(batch) = members.next().await {
            let batch = batch?;
            file.write(&batch)
                .await
                .map_err(|e| e.context(format!("export to {}", config.url)))?;
            report.rows += batch.num_rows() as u64;
            for (piece, ends) in cutter.cut(&batch) {
                open |= piece.num_rows() > 0;
                if ends {
                    report.batches += 1;
                    open = false;
                }
            }
        }
        if open {
            report.batches += 1;
        }
        Ok::<(), crate::error::Error>(())
    }
    .await;
    if let Err(e) = written {
        file.abort().await.ok();
        return Err(e);
    }
    file.commit()
        .await
        .map_err(|e| e.context(format!("export to {}", config.url)))
}

/// `per_batch`: the parts written to `staging` replace what `target` held, and the `_SUCCESS`
/// manifest is written last. The marker goes first and comes back last: a folder without it is
/// incomplete. Returns where the parts are now.
async fn move_parts(
    store: &Arc<dyn ObjectStore>,
    staging: &Path,
    target: &Path,
    config: &Export,
    run: &RunInfo,
    report: &SinkReport,
) -> Result<Vec<Path>> {
    let marker = target.clone().join(SUCCESS);
    match store.delete(&marker).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    remove_prefix(store, target).await?;
    let (mut files, mut moved) = (vec![], vec![]);
    for i in 0..report.batches {
        let name = format!("part-{i:05}.{}", config.format.extension());
        let to = target.clone().join(name.as_str());
        store
            .rename(&staging.clone().join(name.as_str()), &to)
            .await?;
        moved.push(to);
        files.push(name);
    }
    let manifest = serde_json::json!({
        "job": run.job,
        "run_date": run.run_date.to_string(),
        "run_id": run.run_id,
        "rows": report.rows,
        "files": files,
    });
    store
        .put(&marker, manifest.to_string().into_bytes().into())
        .await?;
    Ok(moved)
}

async fn write_parts(
    store: &Arc<dyn ObjectStore>,
    staging: &Path,
    config: &Export,
    schema: SchemaRef,
    members: &mut BoxStream<'static, Result<RecordBatch>>,
    cutter: &mut batch::Batcher,
    report: &mut SinkReport,
) -> Result<()> {
    let ext = config.format.extension();
    let mut part: Option<FileWriter> = None;
    let written = async {
        while let Some(batch) = members.next().await {
            let batch = batch?;
            for (piece, ends) in cutter.cut(&batch) {
                if piece.num_rows() > 0 {
                    if part.is_none() {
                        let path = staging
                            .clone()
                            .join(format!("part-{:05}.{ext}", report.batches));
                        part = Some(FileWriter::create(
                            store.clone(),
                            path.clone(),
                            storage::local_path(&config.url, &path),
                            config.format,
                            schema.clone(),
                        )?);
                    }
                    part.as_mut().expect("open part").write(&piece).await?;
                    report.rows += piece.num_rows() as u64;
                }
                if ends && let Some(file) = part.take() {
                    file.commit().await?;
                    report.batches += 1;
                }
            }
        }
        if let Some(file) = part.take() {
            file.commit().await?;
            report.batches += 1;
        }
        Ok::<(), crate::error::Error>(())
    }
    .await;
    if written.is_err()
        && let Some(file) = part.take()
    {
        // The caller removes the staging folder; the upload begun is aborted here.
        file.abort().await.ok();
    }
    written
}

async fn remove_prefix(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<()> {
    let objects: Vec<_> = store.list(Some(prefix)).try_collect().await?;
    for o in objects {
        store.delete(&o.location).await?;
    }
    Ok(())
}

/// Removes the staging folders earlier runs of the date left in `folder` (a killed run cannot
/// remove its own) once they are `STALE_AFTER` old: their parts are whole objects, which no
/// lifecycle rule for unfinished uploads removes. Best effort: what cannot be listed or removed
/// now is tried by the next run.
async fn sweep_staging(store: &Arc<dyn ObjectStore>, folder: &Path, stem: &str) {
    let Ok(listed) = store.list_with_delimiter(Some(folder)).await else {
        return;
    };
    for prefix in listed.common_prefixes {
        let name = prefix.filename().unwrap_or_default();
        let left = name
            .strip_prefix("_staging-")
            .and_then(|n| n.strip_prefix(stem))
            .and_then(|n| n.strip_prefix('-'));
        if left
            .and_then(run_started)
            .is_some_and(|started| older_than(started, STALE_AFTER))
        {
            tracing::info!(folder = %prefix, "removing the staging folder an earlier run of the date left");
            remove_prefix(store, &prefix).await.ok();
        }
    }
}

/// When the run of id `s` started, if `s` is a run id (`RunInfo::run_id`,
/// `20261125T020304Z-0123456789ab`): another job's staging folder, whose name may begin with
/// this one's stem, has the rest of its stem there instead.
fn run_started(s: &str) -> Option<chrono::NaiveDateTime> {
    let (time, random) = s.split_at_checked(16)?;
    let random = random.strip_prefix('-')?;
    let lower_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    (random.len() == 12 && random.bytes().all(lower_hex))
        .then(|| chrono::NaiveDateTime::parse_from_str(time, RUN_ID_TIME).ok())?
}

fn older_than(started: chrono::NaiveDateTime, age: std::time::Duration) -> bool {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now().naive_utc() - started > age
}

fn display(url: &url::Url, folder: &Path, path: &Path) -> String {
    let rel = path
        .as_ref()
        .strip_prefix(folder.as_ref())
        .unwrap_or(path.as_ref());
    format!("{}{}", url, rel.trim_start_matches('/'))
}
