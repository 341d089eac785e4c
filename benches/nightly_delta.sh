#!/usr/bin/env bash
# Benchmark: the usual night, a mirror run whose segment changed by a few percent, against the
# export-only run of the same date. B1 is synced to the Meta sandbox in `mirror` mode for
# 2026-11-24 once; then, in ROUNDS rounds (default 3) that alternate the order, the 2026-11-25
# mirror run (from a copy of the state as the first date left it, so each round sends the same
# delta) and the export-only B1 run of 2026-11-25.
#
# Usage: [ROUNDS=3] benches/nightly_delta.sh DATA_DIR [BIN]
#   DATA_DIR made by tests/data/gen_data.py --days 2 (or shared/bench/gen_data.py); BIN defaults
#   to target/release/activator. Prints each run's wall time, peak memory, CPU seconds and the
#   report's phases, then the medians and the mirror run's ratio to the export's (issue 20's
#   goal: at most 1.05).
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "$1")
bin=$(realpath "${2:-target/release/activator}")
rounds=${ROUNDS:-3}
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" sandbox --port "$port" >"$work/sandbox.log" 2>&1 &
sleep 1
export B1_DATA=$data META_ACCESS_TOKEN=x SYNC_MODE=mirror PLATFORM_URL=http://127.0.0.1:$port
export ACTIVATOR_STATE=$work/export-state

# The first night, and the state it leaves.
STATE_URL=$work/first "$bin" run jobs/bench_b1_meta.toml --date 2026-11-24 --quiet >/dev/null 2>&1
snapshot() { rm -rf "$work/state"; cp -a "$work/first" "$work/state"; }

measure() { # name, command...
  local name=$1; shift
  sync
  sleep "${SETTLE_SECONDS:-3}"
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" --report-json "$work/report.json" >/dev/null 2>"$work/run.log" \
    || { echo "$name failed:" >&2; tail -20 "$work/run.log" >&2; exit 1; }
  read -r wall kib user sys <"$work/time"
  phases=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
sent = sum(d.get("added", 0) + d.get("removed", 0) for d in r.get("destinations", []))
print(" ".join(f"{k}={v:.2f}" for k, v in r["seconds"].items()), f"sent={sent}")' "$work/report.json")
  printf '%-7s %7s %8d %8s  %s\n' "$name" "$wall" $((kib / 1024)) \
    "$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u + s}')" "$phases"
  echo "$name $wall" >>"$work/walls"
}

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPU; B1 over $data"
printf '%-7s %7s %8s %8s  %s\n' run wall_s peak_mib cpu_s "phases (s), members sent"
for round in $(seq 1 "$rounds"); do
  if ((round % 2)); then order="export mirror"; else order="mirror export"; fi
  for run in $order; do
    if [[ $run == mirror ]]; then
      snapshot
      STATE_URL=$work/state measure mirror "$bin" run jobs/bench_b1_meta.toml --date 2026-11-25 --quiet
    else
      B1_OUT=$work/out measure export "$bin" run jobs/bench_b1.toml --date 2026-11-25 --quiet --force
      rm -rf "$work/out"
    fi
  done
done
median() { grep "^$1 " "$work/walls" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
e=$(median export); m=$(median mirror)
echo "median wall: export ${e} s, mirror ${m} s, mirror/export $(awk -v m="$m" -v e="$e" 'BEGIN{printf "%.2f", m / e}')x"
