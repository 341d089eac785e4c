#!/usr/bin/env bash
# The cost of going distributed: one job on the local engine and on a loopback Ballista cluster
# (`activator cluster`: a scheduler and two executors of the same binary, on the same cores),
# in ROUNDS rounds (default 3) that alternate which engine runs first.
#
#   benches/cluster.sh b1 DATA [BIN]      B1 (jobs/bench_b1.toml) over DATA (gen_data.py --days 2)
#   benches/cluster.sh join DATA [BIN]    benches/cluster/join_30d.toml over DATA (--days 30)
#
# BIN defaults to target/release/activator. Per run it prints the wall time, the driver's peak
# memory and CPU seconds, the CPU seconds the cluster's processes spent, and the members; then
# each engine's median wall time and the cluster's ratio to the local engine's.
set -euo pipefail
cd "$(dirname "$0")/.."
which=$1
data=$(realpath "$2")
bin=$(realpath "${3:-target/release/activator}")
rounds=${ROUNDS:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

case $which in
  b1) job=jobs/bench_b1.toml; export B1_DATA=$data ;;
  join) job=benches/cluster/join_30d.toml; export JOIN_DATA=$data ;;
  *) echo "usage: $0 b1|join DATA [BIN]" >&2; exit 2 ;;
esac
export ACTIVATOR_STATE=$work/state

port=$((20000 + RANDOM % 20000))
"$bin" cluster scheduler --port $port 2>"$work/scheduler.log" &
pids=($!)
sleep 1
for i in 0 1; do
  "$bin" cluster executor --scheduler 127.0.0.1:$port --port $((port + 2 + 2 * i)) \
    --work-dir "$work/shuffle-$i" 2>"$work/executor-$i.log" &
  pids+=($!)
done
sleep 2

cluster_cpu() {  # CPU seconds (user + system) the cluster's processes have spent
  local total=0
  for p in "${pids[@]}"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "scale=2; $total / $(getconf CLK_TCK)" | bc
}

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPU; $which over $data"
printf '%-8s %-6s %8s %10s %10s %12s %10s\n' round engine wall_s peak_mib driver_cpu cluster_cpu members
for round in $(seq 1 "$rounds"); do
  if ((round % 2)); then order="local cluster"; else order="cluster local"; fi
  for engine in $order; do
    url=local; [[ $engine == cluster ]] && url=ballista://127.0.0.1:$port
    out=$work/out-$engine-$round
    before=$(cluster_cpu)
    B1_OUT=$out JOIN_OUT=$out /usr/bin/time -f "%e %M %U %S" -o "$work/time" \
      "$bin" run "$job" --date 2026-11-25 --quiet --force --engine "$url" \
      --report-json "$work/report.json" >/dev/null 2>"$work/run.log"
    after=$(cluster_cpu)
    read -r wall peak user sys <"$work/time"
    members=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["members"])' "$work/report.json")
    printf '%-8s %-6s %8s %10d %10s %12s %10s\n' "$round" "$engine" "$wall" $((peak / 1024)) \
      "$(echo "$user + $sys" | bc)" "$(echo "$after - $before" | bc)" "$members"
    echo "$engine $wall" >>"$work/walls"
    rm -rf "$out"
  done
done
median() { grep "^$1 " "$work/walls" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
l=$(median local); c=$(median cluster)
echo "median wall: local ${l} s, cluster ${c} s, cluster/local $(echo "scale=2; $c / $l" | bc)x"
