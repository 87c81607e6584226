#!/usr/bin/env bash
# PID 1 of concierge/lb: runs nginx, and reloads it when a replica's address
# changes. nginx resolves the upstream names (gateway1..3) only when it loads
# its configuration, and a replica that is restarted or recreated can come
# back with another address (two restarted at once can even swap theirs).
# A reload re-resolves them; it is skipped while a name does not resolve (a
# replica that is down), and a reload that fails leaves the old workers
# serving. Open WebSockets stay on the old workers until they close.
set -euo pipefail

conf=/etc/nginx/nginx.conf
interval=${LB_RESOLVE_INTERVAL:-5}
mapfile -t hosts < <(sed -n 's/^[[:space:]]*server[[:space:]]\{1,\}\([A-Za-z][A-Za-z0-9_.-]*\):[0-9].*/\1/p' "$conf")

addresses() { # "host=addr ..." or nothing if a name does not resolve
    local host addr out=()
    for host in "${hosts[@]}"; do
        addr=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }') || true
        [[ -n $addr ]] || return 0
        out+=("$host=$addr")
    done
    printf '%s' "${out[*]}"
}

log() { printf '%s lb: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

applied=$(addresses)
nginx -g 'daemon off;' &
nginx_pid=$!
# STOPSIGNAL is SIGQUIT (graceful); pass any stop signal on to nginx.
trap 'kill -QUIT "$nginx_pid" 2>/dev/null || true' QUIT TERM INT
log "nginx started; upstreams ${applied:-(not all resolvable)}"

while kill -0 "$nginx_pid" 2>/dev/null; do
    sleep "$interval" &
    wait $! || true
    kill -0 "$nginx_pid" 2>/dev/null || break
    current=$(addresses)
    if [[ -n $current && $current != "$applied" ]]; then
        log "upstream addresses changed (${applied:-unknown} -> $current): reloading nginx"
        if nginx -s reload; then
            applied=$current
        fi
    fi
done
status=0
wait "$nginx_pid" || status=$?
exit "$status"
