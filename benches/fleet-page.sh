#!/usr/bin/env bash
# Issue 26's benchmark: the console's Fleet page at 10,000 hosts. Starts a
# release gateway on the loopback (open files raised), connects N simulated
# hosts (benches/fleet_hosts.py: facts and one health summary each, held
# open) while the gateway has no account yet, then adds an admin account
# and measures the page in headless Chromium (benches/fleet_page.py): the
# first rows drawn and every host counted after a reload, a target filter,
# a quick filter and three sorts, each on the page's own clock.
#
#   benches/fleet-page.sh            # 10,000 hosts, 3 runs
#   benches/fleet-page.sh 3000 5
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-10000}
runs=${2:-3}
port=8193

# shellcheck source=benches/processes.sh
source benches/processes.sh

(ulimit -n 65536 2>/dev/null || true
 exec env CONCIERGE_LOG=warn "$bin" --bind "127.0.0.1:$port" --data-dir "$logs/data" >"$logs/gateway.log" 2>&1) &
pids+=($!)
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done

# The hosts join while the gateway needs no token; they stay connected
# after the account is made (a connection's token is checked as it joins).
(ulimit -n 65536 2>/dev/null || true
 exec python3 benches/fleet_hosts.py "ws://127.0.0.1:$port/ws" "$hosts" >"$logs/hosts.log" 2>&1) &
pids+=($!)
until [ -s "$logs/hosts.log" ]; do sleep 1; done
echo "hosts: $(head -1 "$logs/hosts.log")"

password="bench password $$"
printf '%s\n' "$password" | "$bin" user add bench --role admin --password-stdin --local --data-dir "$logs/data" >/dev/null
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")" = 401 ]; do sleep 0.1; done
python3 benches/fleet_page.py "http://127.0.0.1:$port" bench "$password" "$hosts" "$runs"
echo "gateway RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/${pids[0]}/status")"
