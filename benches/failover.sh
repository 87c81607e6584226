#!/usr/bin/env bash
# The replica-kill benchmark of issue 24: two replica processes on a real
# redis-server (started by the test), the owner of a service with a history
# publishing at a steady rate on one, subscribers holding tokens for their
# names on the other, which is SIGKILLed; they reconnect to the survivor
# with their last position. Prints, per run, the names-back and resume
# latencies (fastest, median, slowest, from each subscriber's first retry),
# the messages replayed, lost and duplicated (the test fails unless lost and
# duplicated are 0). A subscriber that missed more than max_outgoing_queue / 2
# messages is not replayed (docs/PROTOCOL.md section 17.3): for higher rates,
# give the replicas' max_outgoing_queue as a fourth argument. With --sentinel, the Sentinel failover instead: what a
# subscriber on the other gateway missed live and recovered.
#
#   benches/failover.sh                      # 20 subscribers, 500 msg/s, 3 s
#   benches/failover.sh 50 1000 3 8192       # subscribers, msg/s, seconds, queue
#   benches/failover.sh --sentinel
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sentinel" ]; then
  exec cargo nextest run --test sentinel --no-capture \
    -E 'test(/history_survives_a_failover/)'
fi
export CONCIERGE_FAILOVER_CLIENTS="${1:-20}"
export CONCIERGE_FAILOVER_RATE="${2:-500}"
export CONCIERGE_FAILOVER_SECONDS="${3:-3}"
export CONCIERGE_FAILOVER_QUEUE="${4:-1024}"
exec cargo nextest run --test cluster --no-capture \
  -E 'test(/kill_replay::subscribers_of_a_killed_replica/)'
