#!/usr/bin/env bash
# Benchmark: runs keep to a memory budget. B1 (jobs/bench_b1.toml) and B1 with DISTINCT and
# ORDER BY over the whole segment (benches/memory/b1_sorted.toml) run under
# ACTIVATOR_MEMORY_LIMIT=$LIMIT, then without a limit; each limited run must give exactly the
# members of the unlimited B1 run. Prints wall seconds, peak RSS and the members compared.
#
# Usage: [LIMIT=1GiB] benches/memory_budget.sh DATA_DIR [BIN]
#   DATA_DIR made by tests/data/gen_data.py (30 million customers: --customers 30000000 --days 2);
#   BIN defaults to target/release/activator. Needs the test venv (.venv, for DuckDB).
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1
bin=${2:-target/release/activator}
limit=${LIMIT:-1GiB}
work=$(mktemp -d "${TMPDIR:-/tmp}/activator-memory-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export B1_DATA=$data ACTIVATOR_LOG=warn

run() { # name, limit ("" for none), job: prints "name limit wall_s peak_mib"
  local name=$1 limit=$2 job=$3
  sync
  B1_OUT=$work/$name ACTIVATOR_STATE=$work/state-$name ACTIVATOR_MEMORY_LIMIT=$limit /usr/bin/time -f "%e %M" -o "$work/$name.time" \
    "$bin" run "$job" --date 2026-11-25 --quiet > "$work/$name.log" 2>&1 \
    || { echo "$name failed:" >&2; tail -20 "$work/$name.log" >&2; exit 1; }
  read -r wall kib < "$work/$name.time"
  echo "$name ${limit:-none} $wall $((kib / 1024))"
}

echo "lscpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
echo "name limit wall_s peak_mib"
run b1 "" jobs/bench_b1.toml
run b1_limited "$limit" jobs/bench_b1.toml
run sorted_limited "$limit" benches/memory/b1_sorted.toml

# The same members: the hashed identifier tuples of each limited run, against the unlimited run.
.venv/bin/python - "$work" <<'PY'
import sys, duckdb
work = sys.argv[1]
cols = "email_sha256, phone_sha256, first_name_sha256, last_name_sha256, zip_sha256, country_sha256"
con = duckdb.connect()
def members(name):
    return f"(SELECT {cols} FROM read_parquet('{work}/{name}/*.parquet'))"
base = con.execute(f"SELECT count(*) FROM {members('b1')}").fetchone()[0]
for name in ["b1_limited", "sorted_limited"]:
    rows = con.execute(f"SELECT count(*) FROM {members(name)}").fetchone()[0]
    only_one = con.execute(
        f"SELECT count(*) FROM ({members(name)} EXCEPT ALL {members('b1')})"
        f" UNION ALL SELECT count(*) FROM ({members('b1')} EXCEPT ALL {members(name)})"
    ).fetchall()
    same = rows == base and all(n == 0 for (n,) in only_one)
    print(f"{name}: {rows} members, {'the same as' if same else 'NOT the same as'} the unlimited run's {base}")
    if not same:
        sys.exit(1)
PY
