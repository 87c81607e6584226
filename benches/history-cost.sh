#!/usr/bin/env bash
# What keeping a service history costs a fan-out, in one run: each trial
# runs the same fan-out without and with `--history`, one after the other,
# against a fresh gateway alone (the history in its memory) and against
# REPLICAS fresh replicas on a fresh Redis (benches/redis-cost.sh: the
# history also in Redis streams).
#
#   benches/history-cost.sh [-n TRIALS] [-r REPLICAS] [-s SIZE] -- --subscribers 1000 --messages 2000 --window 32
#
# Prints one line per run and, per setup, the median over the trials of
# deliveries/s, the gateway's CPU per delivery (alone) and Redis's CPU per
# message sent (replicas, its idle cost subtracted). The bench reports are
# kept in OUT (default target/history-cost/<date>).
set -euo pipefail
cd "$(dirname "$0")/.."

trials=3 replicas=2 size=1000
while getopts "n:r:s:" opt; do
  case $opt in
    n) trials=$OPTARG ;;
    r) replicas=$OPTARG ;;
    s) size=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=target/history-cost/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"

# shellcheck source=benches/processes.sh
source benches/processes.sh

port=8290
alone() { # alone TRIAL LABEL [BENCH ARGS...]
  local trial=$1 label=$2
  shift 2
  local data
  data=$(mktemp -d -p "$logs")
  (exec env CONCIERGE_LOG=warn "$bin" --workers 1 --bind "127.0.0.1:$port" --data-dir "$data" \
    >"$logs/alone-$trial-$label.log" 2>&1) &
  local pid=$!
  pids+=("$pid")
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
  "$bin" bench fanout --url "ws://127.0.0.1:$port/ws" --server-pid "$pid" --json --quiet "$@" \
    >"$out/alone-$trial-$label.json"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

for trial in $(seq 1 "$trials"); do
  alone "$trial" plain "$@"
  alone "$trial" history "$@" --history "$size"
  CONCIERGE_BIN=$bin benches/redis-cost.sh "$replicas" fanout "$@" >"$out/replicas-$trial-plain.json"
  CONCIERGE_BIN=$bin benches/redis-cost.sh "$replicas" fanout "$@" --history "$size" \
    >"$out/replicas-$trial-history.json"
  echo "trial $trial done" >&2
done

python3 - "$out" "$trials" "$replicas" "$size" <<'EOF'
import json, statistics, sys
out, trials, replicas, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(name):
    with open(f"{out}/{name}.json") as f:
        return json.load(f)
rows = []
for setup in ("alone", "replicas"):
    for label in ("plain", "history"):
        rates, costs = [], []
        for t in range(1, trials + 1):
            r = load(f"{setup}-{t}-{label}")
            bench = r if setup == "alone" else r["bench"]
            c = bench["counts"]
            assert c["missing"] == 0 and c["duplicated"] == 0, (setup, label, t, c)
            rates.append(bench["deliveries_per_sec"])
            if setup == "alone":
                costs.append(bench["cpu"]["server_us_per_delivery"])
            else:
                costs.append(r["redis_cpu_s_less_idle"] * 1e6 / c["sent"])
            print(f"{setup} {label} trial {t}: {bench['deliveries_per_sec']:,.0f} deliveries/s, "
                  f"{costs[-1]:.2f} {'gateway µs/delivery' if setup == 'alone' else 'Redis µs/message'}")
        rows.append((setup, label, statistics.median(rates), min(rates), max(rates), statistics.median(costs)))
print()
print(f"| setup | history | deliveries/s, median [min–max] of {trials} | cost (median) |")
print("|---|---|---|---|")
for setup, label, med, lo, hi, cost in rows:
    where = "alone" if setup == "alone" else f"{replicas} replicas, Redis"
    kept = f"{size} messages" if label == "history" else "none"
    unit = "gateway µs per delivery" if setup == "alone" else "Redis µs per message"
    print(f"| {where} | {kept} | {med:,.0f} [{lo:,.0f}–{hi:,.0f}] | {cost:.2f} {unit} |")
EOF
echo "reports in $out"
