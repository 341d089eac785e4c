#!/usr/bin/env bash
# Benchmark: the usual night with the sync state on S3, as deployed (a moto server on loopback
# stands in for S3). B1 is synced to the Meta sandbox in `mirror` mode for 2026-11-24 and
# 2026-11-25; then, in ROUNDS rounds (default 3), each BIN runs 2026-11-25 again with --force, in
# turn. Each such run downloads the last sync's keys (before its read: the lookups need them) and
# members (while it reads: only the diff needs them), finds nothing to send, and stores its own
# members and keys: the state's whole round trip, which the local nightly_delta.sh does not have.
#
# Usage: [ROUNDS=3] [PYTHON=python3] benches/nightly_s3.sh DATA_DIR NAME=BIN [NAME=BIN ...]
#   DATA_DIR made by tests/data/gen_data.py --days 2 (or shared/bench/gen_data.py); PYTHON has
#   moto and boto3 (tests/requirements.txt). Prints each run's wall time, CPU seconds, peak memory
#   and the report's phases (read includes the keys' download, diff the members' wait and the
#   uploads). moto is far slower than S3 at taking uploads: compare builds, not absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "$1")
shift
rounds=${ROUNDS:-3}
python=${PYTHON:-python3}
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
moto_port=$((port + 1))
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$python" -c '
import sys, time
from moto.server import ThreadedMotoServer
ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False).start()
while True:
    time.sleep(1)' "$moto_port" >"$work/moto.log" 2>&1 &
first_bin=$(realpath "${1#*=}")
"$first_bin" sandbox --port "$port" >"$work/sandbox.log" 2>&1 &
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test \
  AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
for _ in $(seq 50); do
  "$python" -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL').create_bucket(Bucket='state')" \
    2>/dev/null && break
  sleep 0.2
done
export B1_DATA=$data META_ACCESS_TOKEN=x SYNC_MODE=mirror PLATFORM_URL=http://127.0.0.1:$port \
  ACTIVATOR_STATE=$work/export-state ACTIVATOR_LOG=warn STATE_URL=s3://state/b1
for date in 2026-11-24 2026-11-25; do
  "$first_bin" run jobs/bench_b1_meta.toml --date "$date" --quiet >"$work/run.log" 2>&1 \
    || { echo "the first sync of $date failed:" >&2; tail -20 "$work/run.log" >&2; exit 1; }
done

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPU; B1 over $data, state on moto"
printf '%-8s %7s %8s %8s  %s\n' run wall_s peak_mib cpu_s "phases (s)"
for _ in $(seq "$rounds"); do
  for spec in "$@"; do
    name=${spec%%=*}
    bin=$(realpath "${spec#*=}")
    sync
    sleep "${SETTLE_SECONDS:-3}"
    /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$bin" run jobs/bench_b1_meta.toml \
      --date 2026-11-25 --quiet --force --report-json "$work/report.json" >"$work/run.log" 2>&1 \
      || { echo "$name failed:" >&2; tail -20 "$work/run.log" >&2; exit 1; }
    read -r wall kib user sys <"$work/time"
    phases=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(" ".join(f"{k}={v:.2f}" for k, v in r["seconds"].items()))' "$work/report.json")
    printf '%-8s %7s %8d %8s  %s\n' "$name" "$wall" $((kib / 1024)) \
      "$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u + s}')" "$phases"
  done
done
