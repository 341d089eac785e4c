#!/usr/bin/env bash
# Benchmark: B1 uploaded to the Meta and Google Data Manager sandboxes vs. the export-only run of
# the same segment, one after another in the same session (wall seconds, peak memory, members/s,
# and CPU seconds of activator and of the sandbox, which shares the machine's cores with it);
# then the request rate reached under a configured Meta call budget.
#
# Usage: [ROUNDS=3] benches/b1_upload.sh DATA_DIR [BIN]
#   DATA_DIR made by shared/bench/gen_data.py; BIN defaults to target/bench-release/activator.
#   Each round runs the export, Meta and Google (ROUNDS=3 puts each in each place once); the
#   summary compares each upload's median wall and CPU seconds with the export's.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1
bin=${2:-target/bench-release/activator}
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

sandbox_cpu() { # CPU seconds the sandbox has used so far
  # utime and stime: fields 14 and 15, counted after the command name (which may hold spaces).
  sed 's/.*) //' "/proc/$sandbox/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($12 + $13) / hz}'
}

measure() { # name, command...: prints "name wall_s peak_mib members cpu_s sandbox_cpu_s"
  local name=$1; shift
  # Each run starts with no dirty pages: otherwise the kernel writes the previous run's files
  # back (1 GB of export, 0.9 GB of members and keys) during this one: ~2 s of a run, once.
  # Then the machine settles: started at once after the Meta run, an upload spent 1.5-2.5 s
  # more in the kernel writing its own members file (Google: 8.2-9.5 s rather than 7.3-7.8 s,
  # and Meta after Meta alike, with hashes kept as text); 5 s later, no more.
  sync
  sleep "${SETTLE_SECONDS:-5}"
  local before; before=$(sandbox_cpu)
  /usr/bin/time -f "%e %M %U %S" -o "$work/$name.time" "$@" --report-json "$work/$name.json" > "$work/$name.log" 2>&1 \
    || { echo "$name failed:" >&2; tail -20 "$work/$name.log" >&2; exit 1; }
  read -r wall kib user sys < "$work/$name.time"
  members=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['members'])" "$work/$name.json")
  echo "$name $wall $((kib / 1024)) $members $(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u + s}') \
$(awk -v a="$(sandbox_cpu)" -v b="$before" 'BEGIN{printf "%.2f", a - b}')"
}

"$bin" sandbox --port "$port" > "$work/sandbox.log" 2>&1 &
sandbox=$!
sleep 1
export B1_DATA=$data B1_OUT=$work/export PLATFORM_URL=http://127.0.0.1:$port
export META_ACCESS_TOKEN=bench GOOGLE_ACCESS_TOKEN=bench ACTIVATOR_LOG=warn
export SYNC_MODE=add
# Rounds of the export, Meta and Google runs. On this VM a run is slower the later it comes after
# others (fresh memory comes slower: with hashes kept as text, an upload in third place spent
# 1.5-2.5 s more in the kernel), so each round starts one later in the order
# (export-meta-google, meta-google-export, ...): over three rounds each run holds each place
# once, and the ratios compare medians.
jobs=(export meta google)
rounds=${ROUNDS:-3}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a number of rounds, 1 or more" >&2; exit 2; }
rows=()
for round in $(seq "$rounds"); do
  for i in 0 1 2; do
    name=${jobs[$(((round - 1 + i) % 3))]}
    job=jobs/bench_b1_$name.toml
    [ "$name" = export ] && job=jobs/bench_b1.toml
    # Fresh sync state: every run sends its whole audience (a first sync, all adds).
    export STATE_URL=$work/state$round/$name ACTIVATOR_STATE=$work/state$round/$name
    rows+=("$round $(AUDIENCE=b1-$name measure "$name" "$bin" run "$job" --date 2026-11-25 --quiet)")
    # The sandbox forgets each audience's 5 million members, so each run starts alike.
    curl -s -X POST "$PLATFORM_URL/_sandbox/reset" > /dev/null
  done
  rm -rf "$work/state$round" "$work/export" # 0.9 GB of members and keys files per upload
done
printf '%s\n' "${rows[@]}" | python3 -c '
import statistics, sys
rows = [line.split() for line in sys.stdin]
print("%5s %-7s %7s %9s %9s %14s %6s %12s" % (
    "round", "run", "wall_s", "peak_MiB", "members", "members_per_s", "cpu_s", "sandbox_cpu"))
runs = {}
for rnd, name, wall, mib, members, cpu, sandbox in rows:
    runs.setdefault(name, []).append(
        (float(wall), float(cpu) + float(sandbox), int(members), float(cpu)))
    print("%5s %-7s %7s %9s %9s %14.0f %6s %12s" % (
        rnd, name, wall, mib, members, int(members) / float(wall), cpu, sandbox))
median = lambda name, i: statistics.median(r[i] for r in runs[name])
for name in ("export", "meta", "google"):
    walls = [r[0] for r in runs[name]]
    print("median %-6s %5.2f s (%.2f-%.2f), %8.0f members/s, wall/export %.2f, cpu/export %.2f,"
          " own cpu/export %.2f" % (
        name, median(name, 0), min(walls), max(walls), runs[name][0][2] / median(name, 0),
        median(name, 0) / median("export", 0), median(name, 1) / median("export", 1),
        median(name, 3) / median("export", 3)))
'
echo "cpu/export: activator's and the sandbox's CPU seconds over the export run's (the emulated"
echo "platform's work runs on the same two cores; against a real platform it would not)."
echo "own cpu/export: activator's CPU seconds alone over the export run's (what a real platform"
echo "would see)."
kill %1 2>/dev/null || true
wait 2>/dev/null || true

# Throttling on: a budget of 600 calls a minute; the job caps itself at 10 requests a second.
port=$((port + 1))
"$bin" sandbox --port "$port" --meta-calls-per-window 600 --meta-window-secs 60 > "$work/sandbox2.log" 2>&1 &
sleep 1
export STATE_URL=$work/state-throttled ACTIVATOR_STATE=$work/state-throttled
cat > "$work/throttled.toml" <<JOB
segment = "$PWD/sql/b1.sql"
profile = "meta"
[vars]
min_value = 100
[[tables]]
name = "customers"
url = "$data/customers"
partitions = ["dt"]
[identifiers]
email = "email"
[[destinations]]
type = "meta"
ad_account_id = "1"
audience = "throttled"
access_token = "env:META_ACCESS_TOKEN"
base_url = "http://127.0.0.1:$port"
requests_per_second = 10
concurrency = 4
batch = { max_rows = ${THROTTLED_ROWS_PER_REQUEST:-10000} }
JOB
start=$(date +%s.%N)
"$bin" run "$work/throttled.toml" --date 2026-11-25 --quiet --report-json "$work/throttled.json" > "$work/throttled.log" 2>&1
end=$(date +%s.%N)
python3 - "$work/throttled.json" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d = r["destinations"][0]
wall = float(sys.argv[3]) - float(sys.argv[2])
send = r["seconds"]["send"]
for what, secs in (("send phase", send), ("whole run", wall)):
    rate = d["requests"] / secs
    print(f"throttled, {what}: {d['requests']} requests ({d['retries']} retries) in {secs:.1f} s "
          f"= {rate:.2f}/s against a limit of 10/s: {100 * rate / 10:.1f}%")
PY
