//! A job file's `[aws]` section: how `activator stack` deploys the job (schedule, Fargate size,
//! timeout, retries, tags, the Secrets Manager secrets behind its `env:` references; for a job
//! whose engine is a cluster, its nodes and their EC2 instance type). `run` ignores it. Every
//! number is range-checked at load, and errors name the file, the key and what is allowed.

use crate::error::{Error, Result};
use crate::resolve::Resolver;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsFile {
    schedule: Option<String>,
    timezone: Option<String>,
    vcpu: Option<f64>,
    memory_mib: Option<i64>,
    timeout_minutes: Option<i64>,
    retries: Option<i64>,
    ephemeral_storage_gib: Option<i64>,
    invalid_share_alarm: Option<f64>,
    nodes: Option<i64>,
    instance_type: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

/// A job's deployment on AWS Batch, with defaults for what `[aws]` leaves out.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsSettings {
    /// EventBridge Scheduler expression: `cron(...)` or `rate(...)`.
    pub schedule: String,
    /// The schedule's time zone (IANA name, e.g. `Europe/Paris`).
    pub timezone: String,
    /// Fargate vCPUs: 0.25, 0.5, 1, 2, 4, 8 or 16; for a cluster job, each node's container's
    /// (a whole number).
    pub vcpu: f64,
    /// Memory within Fargate's range for `vcpu`; for a cluster job, each node's container's.
    pub memory_mib: u32,
    /// An attempt is stopped after this long (SIGTERM, then SIGKILL 30 s later).
    pub timeout_minutes: u32,
    /// Attempts, the first included (AWS Batch `retryStrategy.attempts`).
    pub retries: u32,
    /// Fargate's task storage (a cluster job's `/tmp` is on its instance's disk).
    pub ephemeral_storage_gib: u32,
    /// A cluster job's nodes, the main node included (an AWS Batch multi-node parallel job).
    pub nodes: u32,
    /// The EC2 instance type of the cluster's compute environment.
    pub instance_type: String,
    /// The alarm on invalid values per row read fires above this.
    pub invalid_share_alarm: f64,
    /// Tags of the job's resources (team, tenant, cost centre...).
    pub tags: BTreeMap<String, String>,
    /// Environment variable -> Secrets Manager secret (a name or a full ARN, optionally
    /// `#field` for one field of a JSON secret): how the job's `env:NAME` references get their
    /// values on AWS Batch.
    pub secrets: BTreeMap<String, String>,
    /// Whether the job file names `state`; a deployed job that names none keeps its state in the
    /// stack's bucket (`ACTIVATOR_STATE`).
    pub state_in_job_file: bool,
}

pub const DEFAULT_SCHEDULE: &str = "cron(0 2 * * ? *)";

impl Default for AwsSettings {
    fn default() -> AwsSettings {
        AwsSettings {
            schedule: DEFAULT_SCHEDULE.into(),
            timezone: "UTC".into(),
            vcpu: 1.0,
            memory_mib: 4096,
            timeout_minutes: 120,
            retries: 3,
            ephemeral_storage_gib: 50,
            nodes: 3,
            instance_type: "m7i.2xlarge".into(),
            invalid_share_alarm: 0.2,
            tags: BTreeMap::new(),
            secrets: BTreeMap::new(),
            state_in_job_file: false,
        }
    }
}

/// Fargate's memory for a vCPU count: least, most and step, in MiB.
pub const FARGATE_SIZES: [(f64, u32, u32, u32); 7] = [
    (0.25, 512, 2048, 512),
    (0.5, 1024, 4096, 1024),
    (1.0, 2048, 8192, 1024),
    (2.0, 4096, 16384, 1024),
    (4.0, 8192, 30720, 1024),
    (8.0, 16384, 61440, 4096),
    (16.0, 32768, 122880, 8192),
];

/// Tag keys the stack sets itself.
pub const RESERVED_TAGS: [&str; 2] = ["app", "activator:job"];

impl AwsFile {
    /// Checks the section; `state_in_job_file` tells whether the job file names `state`, and
    /// `cluster` whether the job's engine is a cluster (deployed as a multi-node job on EC2, not
    /// as a Fargate task).
    pub fn resolve(
        &self,
        r: &Resolver,
        state_in_job_file: bool,
        cluster: bool,
    ) -> Result<AwsSettings> {
        let at = r.at;
        let defaults = AwsSettings::default();
        let schedule = match &self.schedule {
            Some(s) => r.interpolate(s, "aws.schedule")?,
            None => defaults.schedule.clone(),
        };
        check_schedule(&schedule).map_err(|m| Error::config(format!("{at}: aws.schedule: {m}")))?;
        let timezone = self
            .timezone
            .clone()
            .unwrap_or_else(|| defaults.timezone.clone());
        if !is_timezone(&timezone) {
            return Err(Error::config(format!(
                "{at}: aws.timezone: `{timezone}` is not a time zone name such as \"UTC\" or \"Europe/Paris\""
            )));
        }
        let (vcpu, memory_mib) = if cluster {
            self.node_size(at)?
        } else {
            let vcpu = self.vcpu.unwrap_or(defaults.vcpu);
            (vcpu, fargate_memory(at, vcpu, self.memory_mib)?)
        };
        let (nodes, instance_type) = self.cluster_settings(at, cluster)?;
        Ok(AwsSettings {
            schedule,
            timezone,
            vcpu,
            memory_mib,
            timeout_minutes: number(
                at,
                "timeout_minutes",
                self.timeout_minutes,
                defaults.timeout_minutes,
                1,
                10_080,
                "minutes (7 days at most)",
            )?,
            retries: number(
                at,
                "retries",
                self.retries,
                defaults.retries,
                1,
                10,
                "attempts, the first included",
            )?,
            ephemeral_storage_gib: number(
                at,
                "ephemeral_storage_gib",
                self.ephemeral_storage_gib,
                defaults.ephemeral_storage_gib,
                21,
                200,
                "GiB (Fargate's range)",
            )?,
            nodes,
            instance_type,
            invalid_share_alarm: match self.invalid_share_alarm {
                None => defaults.invalid_share_alarm,
                Some(s) if s > 0.0 && s <= 1.0 => s,
                Some(_) => {
                    return Err(Error::config(format!(
                        "{at}: aws.invalid_share_alarm: a share above 0 and at most 1, e.g. 0.2 to alarm when \
                         more than one value in five read is invalid"
                    )));
                }
            },
            tags: self.checked_tags(r)?,
            secrets: self.checked_secrets(at)?,
            state_in_job_file,
        })
    }

    /// A cluster node's container: whole vCPUs and MiB that EC2 instances have (Fargate's sizes
    /// do not apply); whether they fit `instance_type` is AWS Batch's to say (a job that does
    /// not fit stays RUNNABLE).
    fn node_size(&self, at: &str) -> Result<(f64, u32)> {
        // By default a node takes the default instance type (m7i.2xlarge: 8 vCPU, 32 GiB) whole,
        // less what ECS's agent keeps.
        let defaults = AwsSettings {
            vcpu: 8.0,
            memory_mib: 28_672,
            ..AwsSettings::default()
        };
        let vcpu = self.vcpu.unwrap_or(defaults.vcpu);
        if vcpu.fract() != 0.0 || !(1.0..=192.0).contains(&vcpu) {
            return Err(Error::config(format!(
                "{at}: aws.vcpu: a whole number of vCPUs, 1 to 192, for each node of a job whose engine is a \
                 cluster (EC2, not Fargate); the default is {}",
                defaults.vcpu
            )));
        }
        let memory_mib = number(
            at,
            "memory_mib",
            self.memory_mib,
            defaults.memory_mib,
            1024,
            1_572_864,
            "MiB for each node of a job whose engine is a cluster (EC2, not Fargate)",
        )?;
        Ok((vcpu, memory_mib))
    }

    /// A cluster job's nodes and instance type. They mean nothing to a job whose engine is
    /// local (a Fargate task), and neither does Fargate's task storage to a cluster job: each is
    /// an error there rather than a setting silently ignored.
    fn cluster_settings(&self, at: &str, cluster: bool) -> Result<(u32, String)> {
        let defaults = AwsSettings::default();
        if !cluster {
            let keys = [
                ("nodes", self.nodes.is_some()),
                ("instance_type", self.instance_type.is_some()),
            ];
            if let Some((key, _)) = keys.iter().find(|(_, set)| *set) {
                return Err(Error::config(format!(
                    "{at}: aws.{key}: only for a job whose engine is a cluster (engine = \"ballista://HOST:PORT\"); \
                     this job's engine is local: remove it"
                )));
            }
            return Ok((defaults.nodes, defaults.instance_type));
        }
        if self.ephemeral_storage_gib.is_some() {
            return Err(Error::config(format!(
                "{at}: aws.ephemeral_storage_gib: Fargate's task storage, which a job whose engine is a cluster \
                 does not have (its nodes run on EC2, /tmp on the instance's disk): remove it"
            )));
        }
        let nodes = number(
            at,
            "nodes",
            self.nodes,
            defaults.nodes,
            2,
            64,
            "nodes, the main node included",
        )?;
        let instance_type = self.instance_type.clone().unwrap_or(defaults.instance_type);
        if !is_instance_type(&instance_type) {
            return Err(Error::config(format!(
                "{at}: aws.instance_type: `{instance_type}` is not an EC2 instance type such as \"m7i.2xlarge\" \
                 (a family in lowercase, a dot, a size)"
            )));
        }
        Ok((nodes, instance_type))
    }

    fn checked_tags(&self, r: &Resolver) -> Result<BTreeMap<String, String>> {
        let at = r.at;
        if self.tags.len() > 50 - RESERVED_TAGS.len() {
            return Err(Error::config(format!(
                "{at}: aws.tags: at most {} tags (AWS allows 50 a resource; the stack sets {})",
                50 - RESERVED_TAGS.len(),
                RESERVED_TAGS.join(" and ")
            )));
        }
        let mut tags = BTreeMap::new();
        for (key, value) in &self.tags {
            let value = r.interpolate(value, &format!("aws.tags.{key}"))?;
            check_tag(key, &value)
                .map_err(|m| Error::config(format!("{at}: aws.tags.{key}: {m}")))?;
            tags.insert(key.clone(), value);
        }
        Ok(tags)
    }

    fn checked_secrets(&self, at: &str) -> Result<BTreeMap<String, String>> {
        for (name, secret) in &self.secrets {
            if !crate::resolve::is_identifier(name) {
                return Err(Error::config(format!(
                    "{at}: aws.secrets.{name}: keys are the environment variables of the job's `env:NAME` references \
                     (letters, digits and _, not starting with a digit)"
                )));
            }
            if !is_secret_id(secret) {
                return Err(Error::config(format!(
                    "{at}: aws.secrets.{name}: is not a Secrets Manager secret (its text is not shown, in case it is \
                     the secret itself): give its name (letters, digits and /_+=.@-) or its full ARN, optionally \
                     followed by #field for one field of a JSON secret"
                )));
            }
        }
        Ok(self.secrets.clone())
    }
}

/// The memory for `vcpu` Fargate vCPUs: the job's if Fargate has that size, else a default.
fn fargate_memory(at: &str, vcpu: f64, memory: Option<i64>) -> Result<u32> {
    let Some(&(_, least, most, step)) = FARGATE_SIZES.iter().find(|s| s.0 == vcpu) else {
        return Err(Error::config(format!(
            "{at}: aws.vcpu: one of 0.25, 0.5, 1, 2, 4, 8 or 16 (Fargate's sizes)"
        )));
    };
    match memory {
        None => Ok(default_memory(least, most, step)),
        Some(m) if fits_fargate(m, least, most, step) => Ok(m as u32),
        Some(_) if least == 512 => Err(Error::config(format!(
            "{at}: aws.memory_mib: with vcpu = 0.25, Fargate takes 512, 1024 or 2048 MiB"
        ))),
        Some(_) => Err(Error::config(format!(
            "{at}: aws.memory_mib: with vcpu = {vcpu}, Fargate takes {least} to {most} MiB in steps of {step}"
        ))),
    }
}

fn number(
    at: &str,
    key: &str,
    value: Option<i64>,
    default: u32,
    least: u32,
    most: u32,
    what: &str,
) -> Result<u32> {
    match value {
        None => Ok(default),
        Some(v) if v >= i64::from(least) && v <= i64::from(most) => Ok(v as u32),
        Some(_) => Err(Error::config(format!(
            "{at}: aws.{key}: {least} to {most} {what}; the default is {default}"
        ))),
    }
}

/// Within Fargate's range for a vCPU count, in its steps (0.25 vCPU: 512, 1024 or 2048).
fn fits_fargate(memory: i64, least: u32, most: u32, step: u32) -> bool {
    let (least, most, step) = (i64::from(least), i64::from(most), i64::from(step));
    (least..=most).contains(&memory)
        && (memory - least) % step == 0
        && !(least == 512 && memory == 1536)
}

/// 4096 MiB where the vCPU count allows it, else the nearest size it allows.
fn default_memory(least: u32, most: u32, step: u32) -> u32 {
    let m = 4096u32.clamp(least, most);
    m - (m - least) % step
}

/// `family.size`, e.g. `m7i.2xlarge`, `c6in.metal`, `u-6tb1.112xlarge`.
fn is_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else {
        return false;
    };
    s.len() <= 64
        && family.starts_with(|c: char| c.is_ascii_lowercase())
        && family
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !size.is_empty()
        && size
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_schedule(s: &str) -> std::result::Result<(), String> {
    let well_formed =
        (s.starts_with("cron(") || s.starts_with("rate(")) && s.ends_with(')') && s.len() > 6;
    if !well_formed {
        return Err(format!(
            "`{s}` is not an EventBridge Scheduler expression: write cron(minutes hours day-of-month month \
             day-of-week year), e.g. \"{DEFAULT_SCHEDULE}\", or rate(value unit), e.g. \"rate(12 hours)\""
        ));
    }
    if s.len() > 256 {
        return Err("at most 256 characters".into());
    }
    Ok(())
}

fn is_timezone(s: &str) -> bool {
    (1..=50).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        && s.as_bytes()[0].is_ascii_alphabetic()
}

/// AWS's tag rules: keys of 1 to 128 and values of at most 256 letters, digits, spaces and
/// `_ . : / = + - @`; `aws:` keys are AWS's own.
fn check_tag(key: &str, value: &str) -> std::result::Result<(), String> {
    let allowed = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c))
    };
    if key.is_empty() || key.chars().count() > 128 || !allowed(key) {
        return Err("a tag key is 1 to 128 letters, digits, spaces and _ . : / = + - @".into());
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err("keys starting with aws: are reserved by AWS".into());
    }
    if RESERVED_TAGS.contains(&key) {
        return Err(format!(
            "the stack sets {key} itself (the application, the job's name)"
        ));
    }
    if value.chars().count() > 256 || !allowed(value) {
        return Err(
            "a tag value is at most 256 letters, digits, spaces and _ . : / = + - @".into(),
        );
    }
    Ok(())
}

/// A secret's name or full ARN, optionally `#field`.
pub(crate) fn is_secret_id(s: &str) -> bool {
    let (id, field) = match s.split_once('#') {
        Some((id, field)) => (id, Some(field)),
        None => (s, None),
    };
    let field_ok = field.is_none_or(|f| {
        !f.is_empty()
            && f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    });
    let id_ok = if let Some(rest) = id.strip_prefix("arn:") {
        rest.contains(":secretsmanager:")
            && rest.contains(":secret:")
            && !rest.contains(['*', '?', '$'])
    } else {
        (1..=512).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
    };
    field_ok && id_ok
}

#[cfg(test)]
mod tests {
    use crate::job::Job;

    fn parse(aws: &str) -> crate::Result<Job> {
        parse_with("", aws)
    }

    /// A job whose engine is a cluster.
    fn parse_cluster(aws: &str) -> crate::Result<Job> {
        parse_with("engine = \"ballista://127.0.0.1:50050\"\n", aws)
    }

    fn parse_with(top: &str, aws: &str) -> crate::Result<Job> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.sql"), "SELECT 1").unwrap();
        let text = format!(
            "{top}segment = \"s.sql\"\nprofile = \"meta\"\n[[tables]]\nname = \"t\"\nurl = \"s3://b/t\"\n\
             [identifiers]\nemail = \"e\"\n[[destinations]]\ntype = \"export\"\nurl = \"s3://b/out\"\n[aws]\n{aws}\n"
        );
        Job::parse(&dir.path().join("j.toml"), &text, &|_| None)
    }

    #[test]
    fn defaults() {
        let job = parse("").unwrap();
        assert_eq!(job.aws, super::AwsSettings::default());
        assert_eq!(parse("vcpu = 0.25").unwrap().aws.memory_mib, 2048);
        assert_eq!(parse("vcpu = 8").unwrap().aws.memory_mib, 16384);
        let job = parse("vcpu = 2\nmemory_mib = 16384\nretries = 10\ntags = { team = \"growth\" }")
            .unwrap();
        assert_eq!(
            (job.aws.vcpu, job.aws.memory_mib, job.aws.retries),
            (2.0, 16384, 10)
        );
    }

    #[test]
    fn out_of_range_names_the_key_and_the_range() {
        let cases = [
            ("vcpu = 3", "aws.vcpu: one of 0.25"),
            (
                "vcpu = 1\nmemory_mib = 9000",
                "2048 to 8192 MiB in steps of 1024",
            ),
            ("vcpu = 0.25\nmemory_mib = 1536", "512, 1024 or 2048 MiB"),
            (
                "vcpu = 16\nmemory_mib = 32769",
                "32768 to 122880 MiB in steps of 8192",
            ),
            ("timeout_minutes = 0", "aws.timeout_minutes: 1 to 10080"),
            ("retries = 11", "aws.retries: 1 to 10"),
            (
                "ephemeral_storage_gib = 20",
                "aws.ephemeral_storage_gib: 21 to 200",
            ),
            ("schedule = \"0 2 * * *\"", "aws.schedule:"),
            ("invalid_share_alarm = 0.0", "aws.invalid_share_alarm"),
            ("tags = { \"aws:x\" = \"y\" }", "reserved by AWS"),
            ("tags = { app = \"y\" }", "aws.tags.app"),
            ("secrets = { \"1X\" = \"s\" }", "aws.secrets.1X"),
            ("secrets = { X = \"a*b\" }", "not a Secrets Manager secret"),
            ("colour = 1", "unknown field"),
        ];
        for (aws, expected) in cases {
            let err = parse(aws).unwrap_err();
            assert!(err.message.contains(expected), "{aws}: {err}");
            assert!(err.message.contains("j.toml"), "{aws}: {err}");
        }
    }

    #[test]
    fn a_cluster_job_has_nodes_of_whole_vcpus_on_an_instance_type() {
        let job = parse_cluster("").unwrap();
        assert_eq!(
            (job.aws.nodes, job.aws.instance_type.as_str()),
            (3, "m7i.2xlarge")
        );
        // By default a node takes the default instance type whole, less what ECS keeps.
        assert_eq!((job.aws.vcpu, job.aws.memory_mib), (8.0, 28_672));
        // Not Fargate's sizes: 6 vCPUs and 20000 MiB are no Fargate pair.
        let job = parse_cluster(
            "nodes = 64\ninstance_type = \"c6in.8xlarge\"\nvcpu = 6\nmemory_mib = 20000",
        )
        .unwrap();
        assert_eq!(
            (
                job.aws.nodes,
                job.aws.instance_type.as_str(),
                job.aws.vcpu,
                job.aws.memory_mib
            ),
            (64, "c6in.8xlarge", 6.0, 20000)
        );
        assert!(super::is_instance_type("u-6tb1.112xlarge"));
        for bad in [
            "m7i",
            "M7i.large",
            "m7i.",
            ".large",
            "m7i.2xlarge.x",
            "m7i 2xlarge",
        ] {
            assert!(!super::is_instance_type(bad), "{bad}");
        }
    }

    #[test]
    fn cluster_settings_out_of_range_or_on_a_local_job_name_the_key() {
        let cases = [
            (
                "nodes = 1",
                "aws.nodes: 2 to 64 nodes, the main node included",
            ),
            ("nodes = 65", "aws.nodes: 2 to 64"),
            ("instance_type = \"large\"", "aws.instance_type: `large`"),
            ("vcpu = 0.5", "aws.vcpu: a whole number of vCPUs, 1 to 192"),
            ("vcpu = 193", "aws.vcpu: a whole number"),
            ("memory_mib = 512", "aws.memory_mib: 1024 to 1572864 MiB"),
            (
                "ephemeral_storage_gib = 40",
                "aws.ephemeral_storage_gib: Fargate's",
            ),
        ];
        for (aws, expected) in cases {
            let err = parse_cluster(aws).unwrap_err();
            assert!(err.message.contains(expected), "{aws}: {err}");
            assert!(err.message.contains("j.toml"), "{aws}: {err}");
        }
        for (aws, key) in [
            ("nodes = 4", "aws.nodes"),
            ("instance_type = \"m7i.2xlarge\"", "aws.instance_type"),
        ] {
            let err = parse(aws).unwrap_err();
            assert!(
                err.message
                    .contains(&format!("{key}: only for a job whose engine is a cluster")),
                "{aws}: {err}"
            );
            assert!(err.message.contains("j.toml"), "{aws}: {err}");
        }
    }

    #[test]
    fn secret_ids() {
        assert!(super::is_secret_id("activator/meta-token"));
        assert!(super::is_secret_id("activator/crm#token"));
        assert!(super::is_secret_id(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf"
        ));
        assert!(!super::is_secret_id("a b"));
        assert!(!super::is_secret_id("x#"));
    }
}
