#!/usr/bin/env bash
# Benchmark: how B1 grows with the data (issue 20's goal: wall time linear within 10%, peak memory
# under 1 GiB at 30 million customers). Runs the export-only B1 job over each DATA_DIR in turn,
# ROUNDS times (default 2), and prints wall time, user and system CPU, peak memory, and the wall
# time per million customers (the count is read from the folder's name, e.g. /tmp/b1-30m).
#
# Usage: [ROUNDS=2] benches/growth.sh BIN DATA_DIR...
#   each DATA_DIR made by tests/data/gen_data.py --customers N --days 2 and named ...-<N/1e6>m.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1"); shift
rounds=${ROUNDS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPU"
printf '%-14s %7s %7s %7s %9s %12s\n' data wall_s user_s sys_s peak_mib "s/M customers"
for round in $(seq 1 "$rounds"); do
  for data in "$@"; do
    millions=$(basename "$data" | sed -n 's/.*-\([0-9]*\)m$/\1/p')
    sync
    sleep "${SETTLE_SECONDS:-3}"
    B1_DATA=$(realpath "$data") B1_OUT=$work/out ACTIVATOR_STATE=$work/state /usr/bin/time -f "%e %U %S %M" -o "$work/time" \
      "$bin" run jobs/bench_b1.toml --date 2026-11-25 --quiet --force >/dev/null 2>"$work/run.log" \
      || { echo "$data failed:" >&2; tail -20 "$work/run.log" >&2; exit 1; }
    rm -rf "$work/out"
    read -r wall user sys kib <"$work/time"
    printf '%-14s %7s %7s %7s %9d %12s\n' "$(basename "$data")" "$wall" "$user" "$sys" $((kib / 1024)) \
      "$([[ -n $millions ]] && awk -v w="$wall" -v m="$millions" 'BEGIN{printf "%.3f", w / m}')"
  done
done
