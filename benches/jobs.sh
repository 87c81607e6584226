#!/usr/bin/env bash
# Issue 25's benchmark: `concierge bench jobs` against a gateway this script
# starts (default: one worker per core, open files raised for 20,000
# connections), or with --replicas against two replicas sharing a fresh
# redis-server on port 6399 (the agents spread over both, the operator on
# the first). Server CPU and memory in the report are the gateways' (and
# Redis's).
#
#   benches/jobs.sh --agents 10000
#   benches/jobs.sh --agents 10000 --kill-ratio 0.3
#   benches/jobs.sh --replicas --agents 10000 --kill-ratio 0.3 --json
set -euo pipefail
cd "$(dirname "$0")/.."
replicas=false
if [ "${1:-}" = "--replicas" ]; then
  replicas=true
  shift
fi

# shellcheck source=benches/processes.sh
source benches/processes.sh

ports=(8191)
redis=()
if $replicas; then
  ports=(8191 8192)
  redis-server --port 6399 --save "" --appendonly no >"$logs/redis.log" 2>&1 & pids+=($!)
  redis=(--redis-url redis://127.0.0.1:6399)
  until redis-cli -p 6399 ping >/dev/null 2>&1; do sleep 0.1; done
fi
urls=()
server_pids=()
for port in "${ports[@]}"; do
  (ulimit -n 20000 2>/dev/null || true
   exec env CONCIERGE_LOG=warn "$bin" --bind "127.0.0.1:$port" \
     --data-dir "$logs/files-$port" "${redis[@]}" >"$logs/gateway-$port.log" 2>&1) &
  pids+=($!)
  server_pids+=(--server-pid "$!")
  urls+=("ws://127.0.0.1:$port/ws")
done
for port in "${ports[@]}"; do
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
done
[ "${#redis[@]}" -eq 0 ] || server_pids+=(--server-pid "${pids[0]}")
"$bin" bench jobs "$@" --replicas "$(IFS=,; echo "${urls[*]}")" "${server_pids[@]}"
