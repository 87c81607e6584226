#!/usr/bin/env bash
# What one Redis pays for a cluster: Redis's own CPU (user + system, from
# /proc) and its command counts (INFO commandstats) during one workload
# against N gateway replicas (one worker each) on a fresh redis-server.
# docs/SCALING.md turns the figures into capacity.
#
#   benches/redis-cost.sh REPLICAS idle SECONDS
#   benches/redis-cost.sh REPLICAS direct  --pairs 200 --messages 500 --window 32
#   benches/redis-cost.sh REPLICAS fanout  --subscribers 1000 --messages 2000 --window 32
#   benches/redis-cost.sh REPLICAS connect --clients 2000
#
# Prints one JSON object: replicas, workload, redis_cpu_s (Redis CPU during
# the workload, the idle seconds before it subtracted), commands {name:
# {calls, usec}} (Redis's time inside each command), and the bench's JSON
# report (deliveries, connects, ...) for the message and connect workloads.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
replicas=$1 workload=$2
shift 2

# shellcheck source=benches/processes.sh
source benches/processes.sh

port=6399
redis-server --port "$port" --save "" --appendonly no >"$logs/redis.log" 2>&1 &
redis=$!
pids+=("$redis")
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
urls=()
for i in $(seq 1 "$replicas"); do
  gw=$((8180 + i))
  (ulimit -n 20000 2>/dev/null || true
   exec env CONCIERGE_LOG=warn "$bin" --workers 1 --bind "127.0.0.1:$gw" \
     --data-dir "$logs/files" --redis-url "redis://127.0.0.1:$port" >"$logs/gateway-$gw.log" 2>&1) &
  pids+=($!)
  urls+=(--url "ws://127.0.0.1:$gw/ws")
done
for i in $(seq 1 "$replicas"); do
  until curl -sf "http://127.0.0.1:$((8180 + i))/readyz" >/dev/null; do sleep 0.1; done
done

# Redis CPU in clock ticks (utime + stime).
ticks() { awk '{ print $14 + $15 }' "/proc/$redis/stat"; }
hz=$(getconf CLK_TCK)

# The idle cost (leases) over a short window, to subtract from the workload.
idle_before=$(ticks)
sleep 3
idle_rate=$(awk -v a="$idle_before" -v b="$(ticks)" 'BEGIN { print (b - a) / 3 }')

redis-cli -p "$port" config resetstat >/dev/null
start_ticks=$(ticks)
start=$(date +%s.%N)
report='null'
case $workload in
  idle) sleep "${1:?idle takes SECONDS}" ;;
  direct | fanout | connect)
    report=$("$bin" bench cluster "$workload" "$@" "${urls[@]}" --json --quiet)
    sleep 1 # the departures reach Redis
    ;;
  *) echo "redis-cost: unknown workload $workload" >&2; exit 2 ;;
esac
end=$(date +%s.%N)
end_ticks=$(ticks)
stats=$(redis-cli -p "$port" info commandstats)

python3 - "$replicas" "$workload" "$hz" "$start_ticks" "$end_ticks" "$start" "$end" "$idle_rate" "$report" "$stats" <<'EOF'
import json, sys
replicas, workload, hz, t0, t1, start, end, idle_rate, report, stats = sys.argv[1:]
hz, t0, t1 = int(hz), float(t0), float(t1)
elapsed = float(end) - float(start)
commands = {}
for line in stats.splitlines():
    if not line.startswith("cmdstat_"):
        continue
    name, fields = line[len("cmdstat_"):].split(":", 1)
    kv = dict(f.split("=", 1) for f in fields.split(","))
    commands[name] = {"calls": int(kv["calls"]), "usec": int(kv["usec"])}
idle = 0.0 if workload == "idle" else float(idle_rate) * elapsed
print(json.dumps({
    "replicas": int(replicas),
    "workload": workload,
    "seconds": round(elapsed, 2),
    "redis_cpu_s": round((t1 - t0) / hz, 3),
    "redis_cpu_s_less_idle": round((t1 - t0) / hz - idle / hz, 3),
    "commands": commands,
    "bench": json.loads(report),
}))
EOF
