"""Least privilege, checked on real requests (tests/least_privilege.rs).

Two commands:

  check.py proxy UPSTREAM PORT LOG
      A recording HTTP proxy on 127.0.0.1:PORT that forwards every request to UPSTREAM (moto)
      unchanged and appends one JSON line per request to LOG: method, raw path and query, the
      headers that decide what the request is (x-amz-target, x-amz-copy-source, ...), the
      service its SigV4 signature names, the body of POST requests (multi-object delete, complete
      multipart upload, Secrets Manager calls: never an object's data) and the answer's status
      (and, for Secrets Manager, the ARN it answered with: never the secret). Lines are written
      before the answer is sent back, so a run that has ended has all its requests in LOG.
      Stops when its parent process ends.

  check.py check SPEC
      SPEC (JSON) names the template `activator stack` printed, how to render it (partition,
      region, account, the stack's resources' names) and, per job, its role, the request logs of
      its runs and its declared resources (tables, state folder, exports: a URL, or
      {"url": URL, "layout": "per_batch"}; secrets). For each job:
      1. every recorded request is mapped to the IAM action(s), resource ARN(s) and condition keys
         AWS authorizes it with, and evaluated against the job role's policy: each must be
         allowed (denied ones are printed, with the request);
      2. every grant of the policy (statement x action x resource, and the s3:prefix patterns of
         list grants) must lie inside the job's declared resources, for an action that kind of
         resource needs (tables: read; state: read, write, delete; exports: write, and for
         per_batch ones list, delete, and read from `_staging-` folders), with no wildcard
         action, NotAction or NotResource;
      3. expected requests (SPEC's `expect`: an action and an ARN pattern) were made and
         answered 2xx, so the runs did exercise what they are meant to.
      Grants no request used are listed, for information. Exit status 1 on any failure.
"""

import http.client
import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

# ---------------------------------------------------------------------------------------------
# The recording proxy
# ---------------------------------------------------------------------------------------------

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}

# Request headers that decide which S3 or Secrets Manager operation a request is.
RECORDED_HEADERS = {
    "host",
    "x-amz-target",
    "x-amz-copy-source",
    "x-amz-copy-source-range",
    "content-type",
    "content-length",
    "range",
    "if-match",
    "if-none-match",
    "x-amz-server-side-encryption",
    "x-amz-tagging",
    "x-amz-acl",
}


def signed_service(authorization):
    """The region and service of a SigV4 Authorization header's credential scope (None if
    unsigned)."""
    m = re.search(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request", authorization or "")
    return (m.group(1), m.group(2)) if m else (None, None)


def run_proxy(upstream, port, log_path):
    up = urllib.parse.urlsplit(upstream)
    assert up.scheme == "http", "the proxy forwards to a plain HTTP upstream (moto)"
    lock = threading.Lock()
    log = open(log_path, "a", encoding="utf-8")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def read_body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def forward(self):
            body = self.read_body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=300)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                answer = resp.read()
                status, reason, answer_headers = resp.status, resp.reason, resp.getheaders()
            except (OSError, http.client.HTTPException) as e:
                # Still logged (the request was made), and answered as a gateway would.
                answer = f"proxy: {e}".encode()
                status, reason, answer_headers = 502, "Bad Gateway", []
            finally:
                conn.close()

            region, service = signed_service(self.headers.get("Authorization"))
            entry = {
                "method": self.command,
                "path": self.path,
                "headers": {
                    k.lower(): v for k, v in self.headers.items() if k.lower() in RECORDED_HEADERS
                },
                "service": service,
                "region": region,
                "length": len(body),
                "status": status,
            }
            if self.command == "POST":
                entry["body"] = body.decode("utf-8", "replace")
            if self.headers.get("X-Amz-Target", "").startswith("secretsmanager."):
                try:
                    entry["answer_arn"] = json.loads(answer).get("ARN")
                except ValueError:
                    pass
            with lock:
                log.write(json.dumps(entry) + "\n")
                log.flush()

            self.send_response_only(status, reason)
            for k, v in answer_headers:
                if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                    continue
                self.send_header(k, v)
            if self.command == "HEAD":
                length = dict((k.lower(), v) for k, v in answer_headers).get("content-length")
                if length is not None:
                    self.send_header("Content-Length", length)
            else:
                self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)
            self.wfile.flush()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    server.shutdown()


# ---------------------------------------------------------------------------------------------
# From a recorded request to what IAM authorizes
# ---------------------------------------------------------------------------------------------


class Unknown(Exception):
    """A request this checker does not know how to authorize: a failure, to be looked at."""


def query_of(raw):
    """The query's parameters, values percent-decoded ('+' is a plus: SigV4 clients encode
    spaces as %20); a parameter without '=' has the value None."""
    out = {}
    for part in raw.split("&") if raw else []:
        if "=" in part:
            k, v = part.split("=", 1)
            out[urllib.parse.unquote(k)] = urllib.parse.unquote(v)
        else:
            out[urllib.parse.unquote(part)] = None
    return out


def s3_object_arn(bucket, key, partition):
    return f"arn:{partition}:s3:::{bucket}/{key}"


def copy_source(header, partition):
    """The source object's ARN of an x-amz-copy-source header (`[/]bucket/key[?versionId=]`)."""
    source = header.split("?", 1)[0]
    source = urllib.parse.unquote(source).lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise Unknown(f"x-amz-copy-source {header!r}")
    return s3_object_arn(bucket, key, partition)


def authorizations(request, ctx):
    """The (action, resource, condition keys) that authorize the request."""
    service = request.get("service")
    target = request["headers"].get("x-amz-target", "")
    if service == "secretsmanager" or target.startswith("secretsmanager."):
        return secrets_manager(request, ctx)
    if service == "s3":
        return s3(request, ctx)
    raise Unknown(f"not a signed S3 or Secrets Manager request (service {service!r})")


def secrets_manager(request, ctx):
    target = request["headers"].get("x-amz-target", "")
    if not target.startswith("secretsmanager."):
        raise Unknown("a Secrets Manager request without X-Amz-Target")
    action = "secretsmanager:" + target.split(".", 1)[1]
    body = json.loads(request.get("body") or "{}")
    secret_id = body.get("SecretId")
    if not secret_id:
        raise Unknown(f"{action} without a SecretId")
    if secret_id.startswith("arn:"):
        arn = secret_id
    elif request.get("answer_arn"):
        # The secret's full ARN (name, '-', six random characters) as moto answered it.
        arn = request["answer_arn"]
    else:
        # Not found: IAM is asked about the ARN the name would have (suffix unknown).
        arn = (
            f"arn:{ctx['partition']}:secretsmanager:{ctx['region']}:{ctx['account']}:"
            f"secret:{secret_id}-??????"
        )
    home = f"arn:{ctx['partition']}:secretsmanager:{ctx['region']}:{ctx['account']}:"
    if not arn.startswith(home):
        raise Unknown(f"secret ARN {arn} is not in the test's region and account")
    return [(action, arn, {})]


def s3(request, ctx):
    partition = ctx["partition"]
    method = request["method"]
    path, _, raw_query = request["path"].partition("?")
    query = query_of(raw_query)
    segments = path.lstrip("/").split("/", 1)
    bucket = urllib.parse.unquote(segments[0])
    key = urllib.parse.unquote(segments[1]) if len(segments) > 1 else ""
    headers = request["headers"]
    if not bucket:
        raise Unknown("an S3 request without a bucket (ListBuckets, or virtual-hosted style)")
    bucket_arn = f"arn:{partition}:s3:::{bucket}"

    if not key:
        if method == "GET" and set(query) <= {
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "continuation-token",
            "start-after",
            "encoding-type",
            "fetch-owner",
            "marker",
        }:
            keys = {}
            for name in ("prefix", "delimiter", "max-keys"):
                if name in query:
                    keys[f"s3:{name}"] = query[name] or ""
            return [("s3:ListBucket", bucket_arn, keys)]
        if method == "HEAD" and not query:
            return [("s3:ListBucket", bucket_arn, {})]
        if method == "GET" and "uploads" in query:
            return [("s3:ListBucketMultipartUploads", bucket_arn, {})]
        if method == "GET" and set(query) == {"location"}:
            return [("s3:GetBucketLocation", bucket_arn, {})]
        if method == "POST" and "delete" in query:
            # DeleteObjects: AWS checks s3:DeleteObject on every key it names.
            root = ET.fromstring(request.get("body") or "")
            names = [e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Key"]
            if not names:
                raise Unknown("DeleteObjects naming no key")
            return [("s3:DeleteObject", s3_object_arn(bucket, k, partition), {}) for k in names]
        raise Unknown(f"bucket request {method} ?{raw_query}")

    arn = s3_object_arn(bucket, key, partition)
    upload = "uploadId" in query
    if method in ("GET", "HEAD"):
        if upload:
            return [("s3:ListMultipartUploadParts", arn, {})]
        if set(query) - {"partNumber", "versionId", "response-content-type"}:
            raise Unknown(f"object request {method} ?{raw_query}")
        action = "s3:GetObjectVersion" if "versionId" in query else "s3:GetObject"
        return [(action, arn, {})]
    if method == "PUT":
        if set(query) - {"partNumber", "uploadId"}:
            raise Unknown(f"object request PUT ?{raw_query}")
        out = [("s3:PutObject", arn, {})]
        if "x-amz-copy-source" in headers:
            out.append(("s3:GetObject", copy_source(headers["x-amz-copy-source"], partition), {}))
        if headers.get("x-amz-tagging"):
            out.append(("s3:PutObjectTagging", arn, {}))
        if headers.get("x-amz-acl"):
            out.append(("s3:PutObjectAcl", arn, {}))
        return out
    if method == "POST":
        if set(query) == {"uploads"} or set(query) == {"uploadId"}:
            # CreateMultipartUpload and CompleteMultipartUpload are authorized as PutObject.
            return [("s3:PutObject", arn, {})]
        raise Unknown(f"object request POST ?{raw_query}")
    if method == "DELETE":
        if set(query) == {"uploadId"}:
            return [("s3:AbortMultipartUpload", arn, {})]
        if not query:
            return [("s3:DeleteObject", arn, {})]
        raise Unknown(f"object request DELETE ?{raw_query}")
    raise Unknown(f"{method} on an object")


# ---------------------------------------------------------------------------------------------
# The policy: rendering and evaluation
# ---------------------------------------------------------------------------------------------


def render(value, ctx):
    """The value with Ref, Fn::GetAtt and Fn::Sub resolved as in the test's account."""
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k == "Ref":
            return reference(v, ctx)
        if k == "Fn::GetAtt":
            return reference(".".join(v) if isinstance(v, list) else v, ctx)
        if k == "Fn::Sub":
            if not isinstance(v, str):
                raise ValueError(f"Fn::Sub with variables: {v!r}")
            return re.sub(r"\$\{([^}!][^}]*)\}", lambda m: reference(m.group(1), ctx), v)
    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    return value


def reference(name, ctx):
    pseudo = {
        "AWS::Partition": ctx["partition"],
        "AWS::Region": ctx["region"],
        "AWS::AccountId": ctx["account"],
        "AWS::URLSuffix": "amazonaws.com",
    }
    if name in pseudo:
        return pseudo[name]
    if name in ctx["refs"]:
        return ctx["refs"][name]
    raise ValueError(f"the spec does not say what {name} is (add it to refs)")


def as_list(v):
    return v if isinstance(v, list) else [v]


def wildcard(pattern, value, ignore_case=False):
    """IAM's matching: `*` any run of characters, `?` any one character, the rest literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.S | (re.I if ignore_case else 0)) is not None


SUPPORTED_OPERATORS = {"StringEquals", "StringNotEquals", "StringLike", "StringNotLike"}


def condition_holds(condition, keys):
    """Whether a statement's Condition holds for the request's condition keys (operators AND,
    keys AND, values OR; a missing key fails the positive operators, passes the negated ones,
    and passes anything ...IfExists)."""
    lowered = {k.lower(): v for k, v in keys.items()}
    for operator, tests in (condition or {}).items():
        base = operator[: -len("IfExists")] if operator.endswith("IfExists") else operator
        if base not in SUPPORTED_OPERATORS:
            raise ValueError(f"condition operator {operator} is not supported by this checker")
        for key, values in tests.items():
            values = [str(v) for v in as_list(values)]
            if key.lower() not in lowered:
                if operator.endswith("IfExists") or base.startswith("StringNot"):
                    continue
                return False
            actual = lowered[key.lower()]
            like = base.endswith("Like")
            hit = any(wildcard(v, actual) if like else v == actual for v in values)
            if base.startswith("StringNot"):
                hit = not hit
            if not hit:
                return False
    return True


def statement_applies(st, action, resource, keys):
    if "Action" in st:
        if not any(wildcard(a, action, ignore_case=True) for a in as_list(st["Action"])):
            return False
    elif "NotAction" in st:
        if any(wildcard(a, action, ignore_case=True) for a in as_list(st["NotAction"])):
            return False
    else:
        return False
    if "Resource" in st:
        if not any(wildcard(r, resource) for r in as_list(st["Resource"])):
            return False
    elif "NotResource" in st:
        if any(wildcard(r, resource) for r in as_list(st["NotResource"])):
            return False
    else:
        return False
    return condition_holds(st.get("Condition"), keys)


def evaluate(policy, action, resource, keys):
    """'Allow' with the Sids that allow it, or 'Deny' with the reason (explicit or implicit)."""
    statements = as_list(policy.get("Statement", []))
    applying = [s for s in statements if statement_applies(s, action, resource, keys)]
    denies = [s for s in applying if s.get("Effect") == "Deny"]
    if denies:
        return False, "explicitly denied by " + ", ".join(s.get("Sid", "?") for s in denies)
    allows = [s for s in applying if s.get("Effect") == "Allow"]
    if allows:
        return True, allows
    return False, "no statement allows it"


# ---------------------------------------------------------------------------------------------
# Grants against the job's declared resources
# ---------------------------------------------------------------------------------------------

# What each kind of declared resource needs: a table is read, the state folder is read, written
# and cleaned up, an export (one file per run) is written.
NEEDS = {
    "table": {"s3:GetObject", "s3:ListBucket"},
    "state": {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
    },
    "export": {"s3:PutObject", "s3:AbortMultipartUpload"},
    # A per_batch export also lists and empties the date's folder and its staging folder, and
    # moves (copies, then deletes) the parts out of `_staging-...` folders, whence it reads.
    "per_batch export": {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:ListBucket",
    },
    "staging": {"s3:GetObject"},
}


def literal_head(pattern):
    """The part of a pattern before its first wildcard: every match starts with it."""
    m = re.search(r"[*?]", pattern)
    return pattern if m is None else pattern[: m.start()]


def s3_url(url):
    u = urllib.parse.urlsplit(url)
    assert u.scheme == "s3" and u.path.endswith("/"), f"declared S3 folders end with '/': {url}"
    return u.netloc, urllib.parse.unquote(u.path.lstrip("/"))


def grant_problems(policy, job, ctx):
    """Each grant that lies outside the job's declared resources, described."""
    p, region, account = ctx["partition"], ctx["region"], ctx["account"]
    home = f"arn:{p}:secretsmanager:{region}:{account}:"
    folders = []  # (kind, bucket, prefix)
    for url in job.get("tables", []):
        folders.append(("table", *s3_url(url)))
    for export in job.get("exports", []):
        if isinstance(export, dict) and export.get("layout") == "per_batch":
            bucket, prefix = s3_url(export["url"])
            folders.append(("per_batch export", bucket, prefix))
            folders.append(("staging", bucket, prefix + "_staging-"))
        else:
            url = export["url"] if isinstance(export, dict) else export
            folders.append(("export", *s3_url(url)))
    if job.get("state"):
        folders.append(("state", *s3_url(job["state"])))
    # A secret named by its name is granted on its ARN with Secrets Manager's six random
    # characters (`-??????`, not `-*`, which would take in other secrets the name begins).
    secret_arns = {
        name if name.startswith("arn:") else f"{home}secret:{name}-??????"
        for name in job.get("secrets", [])
    }
    key_arn = ctx.get("key_arn")
    services = {f"s3.{region}.amazonaws.com"}
    if job.get("secrets"):
        services.add(f"secretsmanager.{region}.amazonaws.com")

    problems = []
    for st in as_list(policy.get("Statement", [])):
        sid = st.get("Sid", "?")
        if st.get("Effect") != "Allow":
            continue
        if "NotAction" in st or "NotResource" in st:
            problems.append(f"{sid}: NotAction/NotResource grants all but what it names")
            continue
        condition = st.get("Condition") or {}
        for action in as_list(st.get("Action", [])):
            if "*" in action or "?" in action:
                problems.append(f"{sid}: wildcard action {action}")
                continue
            for resource in as_list(st.get("Resource", [])):
                what = f"{sid}: {action} on {resource}"
                if action == "s3:ListBucket":
                    m = re.fullmatch(rf"arn:{p}:s3:::([^/*?]+)", resource)
                    if not m:
                        problems.append(f"{what}: not one bucket's ARN")
                        continue
                    bucket = m.group(1)
                    if any(
                        b == bucket and prefix == "" and action in NEEDS[kind]
                        for kind, b, prefix in folders
                    ):
                        continue  # a folder listed is the bucket's root: any listing is inside it
                    # (operator, value) of each s3:prefix value the listing must match.
                    prefixes = [
                        (op, str(v))
                        for op in ("StringLike", "StringEquals")
                        for k, vs in (condition.get(op) or {}).items()
                        if k.lower() == "s3:prefix"
                        for v in as_list(vs)
                    ]
                    others = [op for op in condition if op not in ("StringLike", "StringEquals")]
                    if not prefixes or others:
                        problems.append(
                            f"{what}: the listing is not limited by an s3:prefix condition "
                            f"({condition})"
                        )
                        continue
                    for op, pattern in prefixes:
                        head = pattern if op == "StringEquals" else literal_head(pattern)
                        if not any(
                            b == bucket and head.startswith(prefix) and action in NEEDS[kind]
                            for kind, b, prefix in folders
                        ):
                            problems.append(
                                f"{what}: s3:prefix {pattern!r} lists outside the job's folders "
                                "that are listed"
                            )
                elif action.startswith("s3:"):
                    head = literal_head(resource)
                    if not any(
                        head.startswith(f"arn:{p}:s3:::{b}/{prefix}") and action in NEEDS[kind]
                        for kind, b, prefix in folders
                    ):
                        problems.append(f"{what}: outside the job's folders that need {action}")
                    if condition:
                        problems.append(f"{what}: unexpected condition {condition}")
                elif action == "secretsmanager:GetSecretValue":
                    if resource not in secret_arns:
                        secrets = sorted(secret_arns) or "none"
                        problems.append(f"{what}: not one of the job's secrets ({secrets})")
                elif action in ("kms:Decrypt", "kms:GenerateDataKey"):
                    if key_arn is None or resource != key_arn:
                        problems.append(f"{what}: not the stack's key")
                    via = [
                        v
                        for k, vs in (condition.get("StringEquals") or {}).items()
                        if k.lower() == "kms:viaservice"
                        for v in as_list(vs)
                    ]
                    if set(condition) != {"StringEquals"} or not via or not set(via) <= services:
                        problems.append(
                            f"{what}: not limited to kms:ViaService {sorted(services)} "
                            f"({condition})"
                        )
                else:
                    problems.append(f"{what}: an action the job does not need")
    return problems


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


def load_yaml(path):
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def describe(request):
    headers = " ".join(
        f"{k}={v}"
        for k, v in sorted(request["headers"].items())
        if k not in ("host", "content-length", "content-type")
    )
    text = f"{request['method']} {request['path']} -> {request['status']}"
    return text + (f" [{headers}]" if headers else "")


def check(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    ctx = {
        "partition": spec.get("partition", "aws"),
        "region": spec["region"],
        "account": spec["account"],
        "refs": spec.get("refs", {}),
    }
    template = load_yaml(spec["template"])
    resources = template["Resources"]
    if "Key" in resources:
        ctx["refs"].setdefault(
            "Key.Arn",
            f"arn:{ctx['partition']}:kms:{ctx['region']}:{ctx['account']}:"
            "key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        ctx["key_arn"] = ctx["refs"]["Key.Arn"]

    failures = 0
    for name, job in spec["jobs"].items():
        role = resources.get(job["role"])
        if not role or role.get("Type") != "AWS::IAM::Role":
            print(f"FAIL {name}: the template has no role {job['role']}")
            failures += 1
            continue
        properties = role["Properties"]
        documents = [render(p["PolicyDocument"], ctx) for p in properties.get("Policies", [])]
        if len(documents) != 1 or properties.get("ManagedPolicyArns"):
            print(f"FAIL {name}: {job['role']} should have one inline policy and no managed one")
            failures += 1
            continue
        policy = documents[0]
        print(f"== {name}: {job['role']}")
        for st in as_list(policy.get("Statement", [])):
            print("  " + json.dumps(st))

        requests = []
        for log in job["requests"]:
            with open(log, encoding="utf-8") as f:
                requests += [json.loads(line) for line in f if line.strip()]
        print(f"{len(requests)} requests recorded")
        if not requests:
            print(f"FAIL {name}: no request was recorded")
            failures += 1

        used = set()  # (sid, action, resource pattern)
        seen = []  # (action, resource, status)
        counts = {}
        denied = 0
        for r in requests:
            try:
                asked = authorizations(r, ctx)
            except (Unknown, ValueError, ET.ParseError) as e:
                print(f"DENIED {name}: {describe(r)}: not understood: {e}")
                denied += 1
                continue
            for action, resource, keys in asked:
                counts[action] = counts.get(action, 0) + 1
                seen.append((action, resource, r["status"]))
                allowed, why = evaluate(policy, action, resource, keys)
                if not allowed:
                    keys_text = f" with {keys}" if keys else ""
                    print(
                        f"DENIED {name}: {action} on {resource}{keys_text} ({why}), "
                        f"for {describe(r)}"
                    )
                    denied += 1
                    continue
                for st in why:
                    for pattern in as_list(st.get("Resource", [])):
                        if wildcard(pattern, resource):
                            for a in as_list(st.get("Action", [])):
                                if wildcard(a, action, ignore_case=True):
                                    used.add((st.get("Sid", "?"), a, pattern))
        print("requests by action: " + ", ".join(f"{a} {n}" for a, n in sorted(counts.items())))
        failures += denied

        for problem in grant_problems(policy, job, ctx):
            print(f"OVER-GRANT {name}: {problem}")
            failures += 1

        for action, pattern in job.get("expect", []):
            if not any(
                a == action and wildcard(pattern, res) and 200 <= s < 300 for a, res, s in seen
            ):
                print(f"MISSING {name}: no successful {action} on {pattern} was made")
                failures += 1

        unused = []
        for st in as_list(policy.get("Statement", [])):
            if st.get("Effect") != "Allow":
                continue
            for a in as_list(st.get("Action", [])):
                if a.startswith("kms:"):
                    continue  # S3 and Secrets Manager call KMS; no request of the job's does
                for pattern in as_list(st.get("Resource", [])):
                    if (st.get("Sid", "?"), a, pattern) not in used:
                        unused.append(f"{st.get('Sid', '?')}: {a} on {pattern}")
        for u in unused:
            print(f"note {name}: no recorded request used {u}")
        print(f"{name}: {len(requests)} requests, {denied} denied")

    if failures:
        print(f"FAILED: {failures} problem(s)")
        return 1
    print("OK: every request is allowed, and every grant lies inside the jobs' resources")
    return 0


def main(argv):
    if len(argv) == 5 and argv[1] == "proxy":
        run_proxy(argv[2], int(argv[3]), argv[4])
        return 0
    if len(argv) == 3 and argv[1] == "check":
        return check(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
