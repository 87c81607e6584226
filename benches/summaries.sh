#!/usr/bin/env bash
# Issue 26's benchmark: `concierge bench summaries` against a gateway this
# script starts (open files raised for 20,000 connections), or with
# --replicas against two replicas sharing a fresh redis-server on port 6393
# (the agents spread over both). Server CPU and memory in the report are the
# gateways' (and Redis's); the bytes per host per day are the health store's
# growth: the gateway's /metrics gauge if it has one, else health.db's size
# (alone) or Redis's used_memory (replicas).
#
#   benches/summaries.sh --agents 10000 --duration 60
#   benches/summaries.sh --replicas --agents 10000 --duration 60 --json
#   benches/summaries.sh --agents 200 --duration 10 --interval 2   # the gateway's interval follows
#
# The gateway takes one summary a second from a host at most: an --interval
# of about a second has some refused (limit) as they arrive a little early.
set -euo pipefail
cd "$(dirname "$0")/.."
replicas=false
if [ "${1:-}" = "--replicas" ]; then
  replicas=true
  shift
fi
# The gateway's summary_interval_secs is the agents' --interval (whole
# seconds, at least 1), so that none is refused as too soon.
interval=10
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[i]}" = "--interval" ] && interval=${args[i + 1]:-10}
done
gateway_interval=$(printf '%.0f' "$interval")
[ "$gateway_interval" -ge 1 ] || gateway_interval=1

# shellcheck source=benches/processes.sh
source benches/processes.sh

ports=(8293)
redis=()
store=()
if $replicas; then
  ports=(8293 8294)
  redis-server --port 6393 --save "" --appendonly no >"$logs/redis.log" 2>&1 & pids+=($!)
  redis=(--redis-url redis://127.0.0.1:6393)
  store=(--redis-url redis://127.0.0.1:6393)
  until redis-cli -p 6393 ping >/dev/null 2>&1; do sleep 0.1; done
else
  store=(--health-db "$logs/files-8293/health.db")
fi
urls=()
server_pids=()
for port in "${ports[@]}"; do
  (ulimit -n 20000 2>/dev/null || true
   exec env CONCIERGE_LOG=warn CONCIERGE_SUMMARY_INTERVAL_SECS="$gateway_interval" "$bin" \
     --bind "127.0.0.1:$port" --data-dir "$logs/files-$port" "${redis[@]}" \
     >"$logs/gateway-$port.log" 2>&1) &
  pids+=($!)
  server_pids+=(--server-pid "$!")
  urls+=("ws://127.0.0.1:$port/ws")
done
for port in "${ports[@]}"; do
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
done
# Ours answered, not another program on the same port.
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || { cat "$logs"/*.log >&2; echo "a process it started has exited" >&2; exit 2; }
done
[ "${#redis[@]}" -eq 0 ] || server_pids+=(--server-pid "${pids[0]}")
"$bin" bench summaries "$@" --replicas "$(IFS=,; echo "${urls[*]}")" "${server_pids[@]}" "${store[@]}"
