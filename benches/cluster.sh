#!/usr/bin/env bash
# Runs one `concierge bench cluster` scenario against a fresh cluster: a
# redis-server on port 6399 (no persistence) and two gateways with one worker
# each, on 127.0.0.1:8181 and :8182. Server CPU in the report is both
# replicas plus Redis. A subscriber closed by a replica shows in the report
# as missing deliveries.
#
#   benches/cluster.sh fanout --subscribers 1000 --messages 2000 --window 32
#   benches/cluster.sh direct --pairs 200 --messages 500 --window 32
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 SCENARIO [ARGS...]" >&2; exit 2; }

# shellcheck source=benches/processes.sh
source benches/processes.sh

redis-server --port 6399 --save "" --appendonly no >"$logs/redis.log" 2>&1 & pids+=($!)
redis=$!
sleep 0.5
for port in 8181 8182; do
  (ulimit -n 20000 2>/dev/null || true
   exec env CONCIERGE_LOG=warn "$bin" --workers 1 --bind "127.0.0.1:$port" \
     --data-dir "$logs/files" --redis-url redis://127.0.0.1:6399 >"$logs/gateway-$port.log" 2>&1) &
  pids+=($!)
done
sleep 1.5
"$bin" bench cluster "$@" \
  --url ws://127.0.0.1:8181/ws --url ws://127.0.0.1:8182/ws \
  --server-pid "${pids[1]}" --server-pid "${pids[2]}" --server-pid "$redis"
