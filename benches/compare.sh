#!/usr/bin/env bash
# Measures the gateway against the baseline in one run: for each trial, a
# fresh gateway and a fresh baseline server each get the same
# `concierge bench` scenario, one after the other, and every report is kept
# as JSON. A fresh process per trial matters: a gateway that just lost 1,000
# clients spends seconds announcing their departures, and would steal CPU
# from the next measurement.
#
#   benches/compare.sh [-n TRIALS] [-w GATEWAY_WORKERS] [-t BASELINE_THREADS] \
#       [-W OTHER_WORKERS] [-p] [-o OUT_DIR] -- fanout --subscribers 1000 --messages 2000 [...]
#
# -W puts a second gateway, with OTHER_WORKERS workers, in the baseline's
# place: `-w 1 -W 2` asks whether a second worker adds deliveries.
#
# -p pins each server to CPU 0 and the load generator to CPU 1 (taskset), so
# the two do not compete for a core.
#
# Prints one line per run and the median of each figure per server; the
# reports are in OUT_DIR (default target/bench-compare/<date>).
set -euo pipefail
cd "$(dirname "$0")/.."

trials=3 workers=1 threads=1 other="" out="" server_cpu=() bench_cpu=()
while getopts "n:w:t:W:po:" opt; do
  case $opt in
    p) server_cpu=(taskset -c 0) bench_cpu=(taskset -c 1) ;;
    n) trials=$OPTARG ;;
    w) workers=$OPTARG ;;
    t) threads=$OPTARG ;;
    W) other=$OPTARG ;;
    o) out=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [-n N] [-w W] [-t T] [-W W2] [-p] [-o DIR] -- SCENARIO [ARGS...]" >&2; exit 2; }
out=${out:-target/bench-compare/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

cargo build --release --quiet --bin concierge
baseline=$(cargo bench --bench baseline --no-run 2>&1 | grep -o 'target/release/deps/baseline-[0-9a-f]*' | head -1)
[ -x "$baseline" ] || { echo "cannot find the baseline binary" >&2; exit 1; }
concierge=target/release/concierge
second=${other:+gateway-with-$other-workers}
second=${second:-baseline}
data=$(mktemp -d)
pid=""
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=""
}
trap 'stop; rm -rf "$data"' EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

for i in $(seq "$trials"); do
  (ulimit -n 20000 2>/dev/null || true
   exec "${server_cpu[@]}" env CONCIERGE_LOG=warn "$concierge" --workers "$workers" --bind 127.0.0.1:9180 \
     --data-dir "$data" 2>>"$out/gateway.log") & pid=$!
  wait_port 9180
  "${bench_cpu[@]}" "$concierge" bench "$@" --url ws://127.0.0.1:9180/ws --server-pid "$pid" --json --quiet \
    > "$out/gateway-$i.json" || true
  stop
  if [ -n "$other" ]; then
    (ulimit -n 20000 2>/dev/null || true
     exec "${server_cpu[@]}" env CONCIERGE_LOG=warn "$concierge" --workers "$other" --bind 127.0.0.1:9190 \
       --data-dir "$data" 2>>"$out/gateway-$other-workers.log") & pid=$!
  else
    "${server_cpu[@]}" "$baseline" --bind 127.0.0.1:9190 --threads "$threads" 2>/dev/null & pid=$!
  fi
  wait_port 9190
  "${bench_cpu[@]}" "$concierge" bench "$@" --url ws://127.0.0.1:9190/ws --server-pid "$pid" --json --quiet \
    > "$out/$second-$i.json" || true
  stop
done

python3 - "$out" "$second" <<'EOF'
import glob, json, os, statistics, sys
out, second = sys.argv[1], sys.argv[2]
fields = [
    ("deliveries/s", lambda r: r.get("deliveries_per_sec")),
    ("p50 ms", lambda r: (r.get("latency") or {}).get("p50_ms")),
    ("p90 ms", lambda r: (r.get("latency") or {}).get("p90_ms")),
    ("p99 ms", lambda r: (r.get("latency") or {}).get("p99_ms")),
    ("max ms", lambda r: (r.get("latency") or {}).get("max_ms")),
    ("server µs/dlv", lambda r: (r.get("cpu") or {}).get("server_us_per_delivery")),
    ("bench µs/dlv", lambda r: (r.get("cpu") or {}).get("bench_us_per_delivery")),
    ("server cores", lambda r: (r.get("cpu") or {}).get("server_cores")),
    ("bench cores", lambda r: (r.get("cpu") or {}).get("bench_cores")),
    ("machine cores", lambda r: (r.get("cpu") or {}).get("machine_busy_cores")),
    ("missing", lambda r: (r.get("counts") or {}).get("missing")),
    ("duplicated", lambda r: (r.get("counts") or {}).get("duplicated")),
]
def fmt(v):
    return "-" if v is None else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}")
medians = {}
for server in ("gateway", second):
    runs = []
    for path in sorted(glob.glob(os.path.join(out, f"{server}-[0-9]*.json"))):
        try:
            runs.append(json.load(open(path)))
        except ValueError:
            print(f"{path}: no report (the run failed)")
    for r in runs:
        print(server, " ".join(f"{n}={fmt(f(r))}" for n, f in fields[:4] + fields[5:7] + fields[10:]))
    medians[server] = {
        n: statistics.median([f(r) for r in runs if f(r) is not None] or [float("nan")])
        for n, f in fields
    }
print()
print(f"{'median of ' + str(len(glob.glob(os.path.join(out, 'gateway-[0-9]*.json')))) + ' trials':<24}" + "".join(f"{n:>15}" for n, _ in fields))
for server, m in medians.items():
    print(f"{server:<24}" + "".join(f"{fmt(m[n]):>15}" for n, _ in fields))
g, b = medians.get("gateway"), medians.get(second)
if g and b and b["deliveries/s"]:
    print(f"\ngateway / {second}: deliveries/s {g['deliveries/s'] / b['deliveries/s']:.2f}, "
          f"p99 latency {g['p99 ms'] / b['p99 ms']:.2f}")
print(f"reports: {out}")
EOF
