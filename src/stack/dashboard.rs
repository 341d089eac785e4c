//! The CloudWatch dashboard of the metrics runs print as EMF lines (`RunReport::emf_lines`):
//! one row per job, its run's counts (dimension `Job`) and its destinations' (dimensions `Job`,
//! `Destination`), summed per day.

use crate::job::Job;
use crate::stack::NAMESPACE;
use crate::stack::cfn::{reference, resource, sub};
use serde_json::{Value, json};

const DAY: u32 = 86_400;
const ROW_HEIGHT: usize = 6;

pub fn dashboard(jobs: &[Job]) -> Value {
    let widgets: Vec<Value> = jobs
        .iter()
        .enumerate()
        .flat_map(|(row, job)| job_row(job, row * ROW_HEIGHT))
        .collect();
    // The body is JSON text; `${AWS::Region}` is its only variable (job and destination names
    // hold no `$`).
    let body = json!({ "widgets": widgets }).to_string();
    resource(
        "AWS::CloudWatch::Dashboard",
        json!({ "DashboardName": reference("AWS::StackName"), "DashboardBody": sub(body) }),
    )
}

/// Four widgets across the dashboard's 24 columns.
fn job_row(job: &Job, y: usize) -> Vec<Value> {
    let run = |metric: &str| json!([NAMESPACE, metric, "Job", job.name]);
    let destinations: Vec<&str> = job.destinations.iter().map(|d| d.name()).collect();
    let per_destination = |metrics: &[&str]| -> Vec<Value> {
        destinations
            .iter()
            .flat_map(|d| {
                metrics.iter().map(move |m| {
                    json!([NAMESPACE, m, "Job", job.name, "Destination", d, { "label": format!("{d} {m}") }])
                })
            })
            .collect()
    };
    vec![
        widget(
            &format!("{}: rows read, members, invalid values", job.name),
            ["RowsRead", "Members", "InvalidValues"]
                .iter()
                .map(|&m| run(m))
                .collect(),
            "Sum",
            (0, y, 8),
        ),
        widget(
            &format!("{}: seconds", job.name),
            vec![run("Seconds")],
            "Maximum",
            (8, y, 4),
        ),
        widget(
            &format!("{}: added and removed", job.name),
            per_destination(&["Added", "Removed"]),
            "Sum",
            (12, y, 6),
        ),
        widget(
            &format!("{}: requests, retries, platform-invalid", job.name),
            per_destination(&["Requests", "Retries", "PlatformInvalid"]),
            "Sum",
            (18, y, 6),
        ),
    ]
}

/// A metric widget at (x, y) of the given width.
fn widget(
    title: &str,
    metrics: Vec<Value>,
    stat: &str,
    (x, y, width): (usize, usize, usize),
) -> Value {
    json!({
        "type": "metric",
        "x": x,
        "y": y,
        "width": width,
        "height": ROW_HEIGHT,
        "properties": {
            "title": title,
            "region": "${AWS::Region}",
            "view": "timeSeries",
            "stat": stat,
            "period": DAY,
            "metrics": metrics,
        },
    })
}
