"""Creates the template `activator stack` printed in moto's CloudFormation (in process, `mock_aws`)
and checks what the services then hold: the KMS key, the state bucket, the image repository, the
log group, the roles, AWS Batch's compute environments, job queue and job definitions; then submits
each job definition to the queue and waits for SUCCEEDED (moto's Batch without Docker marks a job
done without running its image).

Usage: stack_moto.py TEMPLATE.yaml [TEMPLATE.json]

TEMPLATE.json, when given, is the template as a YAML 1.2 reader read it: PyYAML (YAML 1.1, which
moto and this script read with) must read the same.

Prints one line per check ("ok ..."), and one per concession to moto ("moto: ..."): the resource
types its CloudFormation ignores, the properties it drops, and the template patches made in
memory for moto's bugs (the file is never changed). Exits non-zero on the first failed check.
"""

import ast
import fnmatch
import json
import logging
import os
import sys
import time
import warnings

import yaml

for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(name, None)
os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="eu-west-1")

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

REGION = "eu-west-1"
STACK = "activator"
IMAGE_TAG = "v1"
DATE = "2026-11-25"

# Resource types moto 5.2's CloudFormation does not implement: it warns, marks them
# CREATE_COMPLETE and creates nothing. Any other type must be created.
MOTO_IGNORES = {
    "AWS::CloudWatch::Alarm",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::Subscription",
    "AWS::SNS::TopicPolicy",
    "AWS::Scheduler::Schedule",
    "AWS::SecretsManager::Secret",
}

CHECKS = 0


def ok(what):
    global CHECKS
    CHECKS += 1
    print(f"ok    {what}", flush=True)


def moto(what):
    print(f"moto: {what}", flush=True)


def check(cond, what, detail=None):
    if not cond:
        print(f"FAIL  {what}" + (f"\n      {detail}" if detail is not None else ""), flush=True)
        sys.exit(1)
    ok(what)


def equal(actual, expected, what):
    check(actual == expected, what, f"expected {expected!r}\n      got      {actual!r}")


def camel(value):
    """CloudFormation's PascalCase keys as the APIs' camelCase (intrinsic functions kept)."""
    if isinstance(value, dict):
        intrinsic = lambda k: k == "Ref" or k.startswith("Fn::")  # noqa: E731
        return {(k if intrinsic(k) else k[:1].lower() + k[1:]): camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def sub_text(value):
    """A value whose intrinsics are Ref, Fn::GetAtt and Fn::Sub, as the text of one Fn::Sub."""
    if isinstance(value, dict) and len(value) == 1:
        (k, x), = value.items()
        if k == "Fn::Sub" and isinstance(x, str):
            return x
        if k == "Ref":
            return "${%s}" % x
        if k == "Fn::GetAtt":
            return "${%s.%s}" % tuple(x)
    if isinstance(value, dict):
        return {k: sub_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sub_text(v) for v in value]
    return value


def patch_for_moto(template):
    """Changes that only moto needs, made in memory: each is a moto bug (CloudFormation accepts
    the template as it is) and keeps the value, so that the checks below still test it."""
    for name, r in template["Resources"].items():
        p = r.get("Properties", {})
        kind = r["Type"]
        if kind == "AWS::KMS::Key":
            # moto passes CloudFormation's tags (Key/Value) to the KMS tagger, which reads the
            # API's TagKey/TagValue: KeyError 'TagKey', the stack fails.
            if "Tags" in p:
                p["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in p["Tags"]]
                moto(f"{name}: Tags given as TagKey/TagValue (moto's KMS tagger reads the API's names; KeyError 'TagKey' otherwise)")
            # moto keeps KeyPolicy as the object CloudFormation passes, and json.loads it on
            # every key call (TypeError). CloudFormation takes the policy as a JSON string too:
            # the same document, as one Fn::Sub.
            if isinstance(p.get("KeyPolicy"), dict):
                p["KeyPolicy"] = {"Fn::Sub": json.dumps(sub_text(p["KeyPolicy"]))}
                moto(f"{name}: KeyPolicy given as a JSON string (moto's KMS json.loads the stored policy: TypeError on an object)")
        elif kind == "AWS::ECR::Repository":
            # moto stores these as given, but its API reads camelCase keys: describe_repositories
            # shows them empty.
            for key in ("ImageScanningConfiguration", "EncryptionConfiguration"):
                if key in p:
                    p[key] = camel(p[key])
                    moto(f"{name}: {key}'s keys in camelCase (moto stores CloudFormation's PascalCase where its API reads camelCase)")
        elif kind == "AWS::Logs::LogGroup":
            # moto's LogGroup reads kmsKeyId, not CloudFormation's KmsKeyId.
            if "KmsKeyId" in p:
                p["kmsKeyId"] = p.pop("KmsKeyId")
                moto(f"{name}: KmsKeyId given as kmsKeyId (moto's LogGroup reads the API's name)")
        elif kind == "AWS::Batch::JobDefinition":
            # moto reads properties["timeout"], not CloudFormation's Timeout.
            if "Timeout" in p:
                p["timeout"] = p.pop("Timeout")
                moto(f"{name}: Timeout given as timeout (moto's JobDefinition reads the lower-case name)")
    return template


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main(path, as_json=None):
    started = time.monotonic()
    original = yaml.safe_load(open(path))
    if as_json:
        equal(original, json.load(open(as_json)), "PyYAML (YAML 1.1) reads the template as YAML 1.2 does")
    template = patch_for_moto(json.loads(json.dumps(original)))
    resources = original["Resources"]
    of_type = lambda t: sorted(n for n, r in resources.items() if r["Type"] == t)  # noqa: E731

    collect = Collect()
    moto_log = logging.getLogger("moto")
    moto_log.addHandler(collect)
    moto_log.propagate = False

    with mock_aws(config={"batch": {"use_docker": False}}), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moto("Batch with use_docker=false: submit_job marks a job SUCCEEDED without pulling or running its image")
        c = lambda service: boto3.client(service, region_name=REGION)  # noqa: E731
        ec2, cfn, kms, s3, ecr, logs, iam, batch, sns, events, cloudwatch = map(
            c, ["ec2", "cloudformation", "kms", "s3", "ecr", "logs", "iam", "batch", "sns", "events", "cloudwatch"]
        )

        # The network the stack takes as parameters.
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"]
            for i, z in ((1, "a"), (2, "b"))
        ]
        group = ec2.create_security_group(GroupName="activator-jobs", Description="activator jobs", VpcId=vpc)["GroupId"]
        ok(f"network: VPC {vpc}, subnets {', '.join(subnets)}, security group {group}")

        # The stack.
        parameters = {
            "SubnetIds": ",".join(subnets),
            "SecurityGroupIds": group,
            "ImageTag": IMAGE_TAG,
            "AlarmEmail": "ops@example.com",
        }
        equal(sorted(original["Parameters"]), sorted(parameters), "the template's parameters are the ones given")
        cfn.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        deadline = time.monotonic() + 60
        while True:
            stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
            if not stack["StackStatus"].endswith("IN_PROGRESS") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        equal(stack["StackStatus"], "CREATE_COMPLETE", f"stack {STACK} created ({len(resources)} resources)")

        summaries = cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
        physical = {s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries if s["LogicalResourceId"]}
        ignored = sorted(n for n in resources if n not in physical)
        ignored_types = sorted({resources[n]["Type"] for n in ignored})
        unsupported = sorted({m.rsplit(" ", 1)[1] for m in collect.messages if "No Moto CloudFormation support for" in m})
        for t in ignored_types:
            names = [n for n in ignored if resources[n]["Type"] == t]
            moto(f"ignores {t} (warns, creates nothing): {', '.join(names)}")
        check(
            set(ignored_types) <= MOTO_IGNORES and set(unsupported) <= MOTO_IGNORES,
            "every resource of a type moto implements was created",
            f"not created: {sorted(set(ignored_types) - MOTO_IGNORES)}; moto warned of {unsupported}",
        )
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        equal(sorted(outputs), sorted(original["Outputs"]), "every output is set")

        # What Ref and Fn::GetAtt give, read from the services.
        key_id = physical["Key"]
        key = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        role_arns = {n: iam.get_role(RoleName=physical[n])["Role"]["Arn"] for n in of_type("AWS::IAM::Role")}
        repository = ecr.describe_repositories(repositoryNames=[physical["Repository"]])["repositories"][0]
        attributes = {
            "Key.Arn": key["Arn"],
            "Repository.Arn": repository["repositoryArn"],
            "Repository.RepositoryUri": repository["repositoryUri"],
            "StateBucket.Arn": f"arn:aws:s3:::{physical['StateBucket']}",
            **{f"{n}.Arn": a for n, a in role_arns.items()},
            **{f"{n}.Arn": events.describe_rule(Name=physical[n])["Arn"] for n in of_type("AWS::Events::Rule")},
        }
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": key["AWSAccountId"],
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK,
        }

        def ref(name):
            if name in pseudo:
                return pseudo[name]
            if name in parameters:
                v = parameters[name]
                return v.split(",") if original["Parameters"][name]["Type"].startswith("List<") else v
            return physical[name]

        def resolve(v):
            """The template's value as CloudFormation makes it, from what the services hold."""
            if isinstance(v, dict) and len(v) == 1:
                (k, x), = v.items()
                if k == "Ref":
                    return ref(x)
                if k == "Fn::GetAtt":
                    return attributes[".".join(x)]
                if k == "Fn::Sub":
                    text, names = (x, {}) if isinstance(x, str) else (x[0], resolve(x[1]))
                    out, rest = "", text
                    while "${" in rest:
                        before, _, after = rest.partition("${")
                        name, _, rest = after.partition("}")
                        out += before + str(names.get(name) or attributes.get(name) or ref(name))
                    return out + rest
            if isinstance(v, dict):
                return {k: resolve(x) for k, x in v.items()}
            if isinstance(v, list):
                return [resolve(x) for x in v]
            return v

        props = lambda name: resolve(resources[name]["Properties"])  # noqa: E731
        tags = lambda name: {t["Key"]: t["Value"] for t in props(name).get("Tags", [])}  # noqa: E731

        # KMS.
        for name in of_type("AWS::KMS::Key"):
            p = props(name)
            check(key["Enabled"] and key["KeyState"] == "Enabled", f"KMS key {name} ({key_id}) exists and is enabled")
            equal(key["Description"], p["Description"], f"KMS key {name}: description")
            equal(kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"], True, f"KMS key {name}: rotation enabled")
            policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
            equal(policy, p["KeyPolicy"], f"KMS key {name}: key policy ({len(policy['Statement'])} statements)")
            got = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}
            equal(got, tags(name), f"KMS key {name}: tags")
        for name in of_type("AWS::KMS::Alias"):
            p = props(name)
            aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
            equal(aliases.get(p["AliasName"]), key_id, f"KMS alias {p['AliasName']} names the key")

        # S3.
        for name in of_type("AWS::S3::Bucket"):
            bucket = physical[name]
            p = props(name)
            check(bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]], f"bucket {name} ({bucket}) exists")
            rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
            want = p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            equal(rule["ApplyServerSideEncryptionByDefault"], {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key["Arn"]}, f"bucket {name}: SSE-KMS with the stack's key")
            equal(want["ServerSideEncryptionByDefault"]["KMSMasterKeyID"], key["Arn"], f"bucket {name}: as the template says")
            equal({t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}, tags(name), f"bucket {name}: tags")
            if rule.get("BucketKeyEnabled") != want.get("BucketKeyEnabled"):
                moto(f"{name}: drops BucketKeyEnabled={want.get('BucketKeyEnabled')} (the template sets it)")
            # The settings moto's Bucket does not take from CloudFormation (it takes
            # BucketEncryption's algorithm and key, and Tags).
            dropped = []
            read = {
                "VersioningConfiguration": lambda: {"Status": s3.get_bucket_versioning(Bucket=bucket).get("Status")},
                "LifecycleConfiguration": lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
                "PublicAccessBlockConfiguration": lambda: s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
                "OwnershipControls": lambda: s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"],
            }
            for k, get in read.items():
                if k not in p:
                    continue
                try:
                    got = get()
                except s3.exceptions.ClientError:
                    got = None
                if got in (None, {"Status": None}):
                    dropped.append(k)
                else:
                    ok(f"bucket {name}: {k} applied")
            if dropped:
                moto(f"{name}: drops {', '.join(dropped)} (the template sets them; moto's Bucket takes only BucketEncryption and Tags)")

        # SNS, EventBridge, CloudWatch.
        for name in of_type("AWS::SNS::Topic"):
            p = props(name)
            attrs = sns.get_topic_attributes(TopicArn=physical[name])["Attributes"]
            equal(outputs.get("AlarmTopicArn"), physical[name], f"topic {name} exists, output AlarmTopicArn")
            equal(attrs.get("KmsMasterKeyId"), p.get("KmsMasterKeyId"), f"topic {name}: encrypted with the stack's key")
        for name in of_type("AWS::Events::Rule"):
            p = props(name)
            rule = events.describe_rule(Name=physical[name])
            equal(json.loads(rule["EventPattern"]), p["EventPattern"], f"rule {name}: event pattern (failed jobs of the stack's queue)")
            equal(rule["State"], p["State"], f"rule {name}: {p['State']}")
            targets = [{"Arn": t["Arn"], "Id": t["Id"]} for t in events.list_targets_by_rule(Rule=physical[name])["Targets"]]
            equal(targets, p["Targets"], f"rule {name}: targets the topic")
        for name in of_type("AWS::CloudWatch::Dashboard"):
            p = props(name)
            body = cloudwatch.get_dashboard(DashboardName=p["DashboardName"])["DashboardBody"]
            equal(json.loads(body), json.loads(p["DashboardBody"]), f"dashboard {p['DashboardName']}: body ({len(json.loads(body)['widgets'])} widgets)")

        # ECR.
        for name in of_type("AWS::ECR::Repository"):
            p = props(name)
            equal(repository["repositoryName"], p["RepositoryName"], f"repository {name}: named {p['RepositoryName']}")
            equal(repository["imageTagMutability"], "IMMUTABLE", f"repository {name}: tags IMMUTABLE")
            equal(repository["imageScanningConfiguration"], {"scanOnPush": True}, f"repository {name}: scan on push")
            equal(repository["encryptionConfiguration"], {"encryptionType": "KMS", "kmsKey": key["Arn"]}, f"repository {name}: encrypted with the stack's KMS key")
            equal(outputs.get("RepositoryUri"), repository["repositoryUri"], "output RepositoryUri is the repository's URI")

        # Logs.
        for name in of_type("AWS::Logs::LogGroup"):
            p = props(name)
            groups = logs.describe_log_groups(logGroupNamePrefix=p["LogGroupName"])["logGroups"]
            group_ = next((g for g in groups if g["logGroupName"] == p["LogGroupName"]), None)
            check(group_ is not None, f"log group {p['LogGroupName']} exists")
            check(p.get("RetentionInDays"), f"log group {name}: the template sets a retention")
            equal(group_.get("retentionInDays"), p["RetentionInDays"], f"log group {name}: retention {p['RetentionInDays']} days")
            equal(group_.get("kmsKeyId"), key["Arn"], f"log group {name}: encrypted with the stack's key")

        # IAM.
        repr_policies = []
        for name in of_type("AWS::IAM::Role"):
            p = props(name)
            role = iam.get_role(RoleName=physical[name])["Role"]
            equal(role["AssumeRolePolicyDocument"], p["AssumeRolePolicyDocument"], f"role {name}: trust policy ({p['AssumeRolePolicyDocument']['Statement'][0]['Principal']['Service']})")
            names = iam.list_role_policies(RoleName=physical[name])["PolicyNames"]
            equal(sorted(names), sorted(x["PolicyName"] for x in p.get("Policies", [])), f"role {name}: inline policies {names}")
            for x in p.get("Policies", []):
                doc = iam.get_role_policy(RoleName=physical[name], PolicyName=x["PolicyName"])["PolicyDocument"]
                if isinstance(doc, str):
                    # moto keeps the object CloudFormation passes to put_policy and returns
                    # its Python repr, not JSON: read it back as Python.
                    doc = ast.literal_eval(doc)
                    repr_policies.append(f"{name}/{x['PolicyName']}")
                equal(doc, x["PolicyDocument"], f"role {name}: policy {x['PolicyName']} ({len(doc['Statement'])} statements)")
            got_tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=physical[name])["Tags"]}
            equal(got_tags, tags(name), f"role {name}: tags")
            attached = [a["PolicyArn"] for a in iam.list_attached_role_policies(RoleName=physical[name])["AttachedPolicies"]]
            if p.get("ManagedPolicyArns") and attached != p["ManagedPolicyArns"]:
                moto(f"role {name}: drops ManagedPolicyArns {p['ManagedPolicyArns']} (moto's Role takes only inline Policies)")

        if repr_policies:
            moto(f"get_role_policy returns the Python repr of a stack role's inline policy, read back with ast.literal_eval: {', '.join(repr_policies)}")

        # Batch: compute environments and the queue.
        described = {e["computeEnvironmentArn"]: e for e in batch.describe_compute_environments()["computeEnvironments"]}
        for name in of_type("AWS::Batch::ComputeEnvironment"):
            p = props(name)
            e = described.get(physical[name])
            check(e is not None, f"compute environment {name} exists")
            equal((e["type"], e["state"], e["status"]), (p["Type"], p["State"], "VALID"), f"compute environment {name}: {p['Type']}, {p['State']}, VALID")
            equal(e["computeResources"], camel(p["ComputeResources"]), f"compute environment {name}: {p['ComputeResources']['Type']} in the given subnets and security group")
            equal(e["computeResources"]["subnets"], subnets, f"compute environment {name}: subnets are the parameter's")
            equal(e["serviceRole"], p["ServiceRole"], f"compute environment {name}: service role")
            if e.get("tags") != p.get("Tags", {}):
                moto(f"compute environment {name}: drops Tags {p.get('Tags')}")
        for name in of_type("AWS::Batch::JobQueue"):
            p = props(name)
            q = batch.describe_job_queues(jobQueues=[physical[name]])["jobQueues"]
            check(len(q) == 1, f"job queue {name} exists")
            q = q[0]
            equal((q["state"], q["status"], q["priority"]), (p["State"], "VALID", p["Priority"]), f"job queue {name}: {p['State']}, VALID, priority {p['Priority']}")
            equal(q["computeEnvironmentOrder"], camel(p["ComputeEnvironmentOrder"]), f"job queue {name}: compute environments in order")
            equal(outputs.get("JobQueueArn"), q["jobQueueArn"], "output JobQueueArn is the queue")
            if q.get("tags") != p.get("Tags", {}):
                moto(f"job queue {name}: drops Tags {p.get('Tags')}")
        queue = physical[of_type("AWS::Batch::JobQueue")[0]]

        # Batch: the job definitions.
        execution_policies = [x["PolicyDocument"] for x in props("ExecutionRole")["Policies"]]
        readable = [
            r for d in execution_policies for s in d["Statement"]
            if s["Effect"] == "Allow" and "secretsmanager:GetSecretValue" in s["Action"] for r in s["Resource"]
        ]
        definitions = of_type("AWS::Batch::JobDefinition")
        check(len(definitions) > 0, f"{len(definitions)} job definitions in the template")
        dropped = set()
        for name in definitions:
            p = props(name)
            job = p["Tags"]["activator:job"]
            d = batch.describe_job_definitions(jobDefinitions=[physical[name]])["jobDefinitions"]
            check(len(d) == 1 and d[0]["status"] == "ACTIVE", f"job definition {name} ({job}) registered, ACTIVE")
            d = d[0]
            equal(outputs.get(f"{name}Arn"), d["jobDefinitionArn"], f"{job}: output {name}Arn is the job definition")
            equal(d["type"], p["Type"], f"{job}: type {p['Type']}")
            want = camel(p["ContainerProperties"])
            got = d["containerProperties"]
            equal({k: got.get(k) for k in want}, want, f"{job}: container properties as the template says ({', '.join(sorted(want))})")
            equal(got["image"], f"{repository['repositoryUri']}:{IMAGE_TAG}", f"{job}: image {got['image']}")
            check(got["command"][0] == "run" and got["command"][-2:] == ["--date", "Ref::date"], f"{job}: command {' '.join(got['command'])}")
            equal(got["jobRoleArn"], role_arns[f"{name[:-len('JobDefinition')]}JobRole"], f"{job}: job role is its own")
            equal(got["executionRoleArn"], role_arns["ExecutionRole"], f"{job}: execution role")
            secrets = got.get("secrets", [])
            for s in secrets:
                check(
                    any(fnmatch.fnmatchcase(s["valueFrom"] + "-AbC123", r) for r in readable),
                    f"{job}: secret {s['name']} ({s['valueFrom'].split(':secret:')[1]}) is readable by the execution role",
                )
            ok(f"{job}: {len(secrets)} secret(s): {', '.join(s['name'] for s in secrets) or 'none'}")
            equal(got["logConfiguration"]["options"]["awslogs-group"], resolve(resources["LogGroup"]["Properties"]["LogGroupName"]), f"{job}: logs to the stack's log group")
            retry = d["retryStrategy"]
            want_retry = camel(p["RetryStrategy"])
            # moto lower-cases the actions (RETRY, EXIT); AWS compares them case-insensitively.
            norm = lambda r: {**r, "evaluateOnExit": [{**e, "action": e["action"].upper()} for e in r.get("evaluateOnExit", [])]}  # noqa: E731
            equal(norm(retry), norm(want_retry), f"{job}: retry strategy, {retry['attempts']} attempts, {len(retry['evaluateOnExit'])} exit rules")
            check(retry["evaluateOnExit"][-1]["action"].upper() == "EXIT", f"{job}: retry rules end in EXIT")
            check("Timeout" in p, f"{job}: the template sets a timeout")
            equal(d.get("timeout"), camel(p["Timeout"]), f"{job}: timeout {p['Timeout']['AttemptDurationSeconds']} s")
            equal(d.get("tags"), p.get("Tags"), f"{job}: tags")
            if d.get("platformCapabilities") != p.get("PlatformCapabilities"):
                dropped.add(f"PlatformCapabilities {p.get('PlatformCapabilities')}")
            if d.get("propagateTags") != p.get("PropagateTags"):
                dropped.add(f"PropagateTags {p.get('PropagateTags')}")
        if dropped:
            moto(f"job definitions: drops {', '.join(sorted(dropped))} (moto's JobDefinition sets them to None)")

        # Submit each job definition to the queue, as the schedules would.
        for name in definitions:
            job = resources[name]["Properties"]["Tags"]["activator:job"]
            submitted = batch.submit_job(jobName=job, jobQueue=queue, jobDefinition=physical[name], parameters={"date": DATE})
            deadline = time.monotonic() + 60
            while True:
                j = batch.describe_jobs(jobs=[submitted["jobId"]])["jobs"][0]
                if j["status"] in ("SUCCEEDED", "FAILED") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            equal(j["status"], "SUCCEEDED", f"{job}: submitted to the queue with date={DATE}, job {submitted['jobId']} SUCCEEDED")
            equal(j["jobDefinition"], physical[name], f"{job}: the job ran its definition")
            equal(j["jobQueue"], queue, f"{job}: the job went through the stack's queue")
            equal(j.get("parameters"), {"date": DATE}, f"{job}: the job's parameters")
            # moto's describe_jobs shows the definition's command as is; Batch fills each
            # Ref::NAME from the job's parameters (the definition's defaults under them).
            filled = {**resources[name]["Properties"].get("Parameters", {}), **j["parameters"]}
            command = j["container"]["command"]
            missing = [c for c in command if c.startswith("Ref::") and c[5:] not in filled]
            check(not missing, f"{job}: every placeholder is filled: {' '.join(filled.get(c[5:], c) if c.startswith('Ref::') else c for c in command)}", f"unfilled: {missing}")

    print(f"{CHECKS} checks passed in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(*sys.argv[1:])
