# Sourced by the bench scripts that start their own Redis and gateways:
# picks the binary and cleans up every process they start.
#
# CONCIERGE_BIN: run that binary (e.g. an older build, for an A/B) instead
# of building target/release/concierge. Sets $bin, $logs (a temporary
# folder, removed on exit) and $pids (killed on exit: append to it).
bin=${CONCIERGE_BIN:-target/release/concierge}
[ -n "${CONCIERGE_BIN:-}" ] || cargo build --release --quiet --bin concierge
logs=$(mktemp -d)
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$logs"; }
trap stop EXIT
