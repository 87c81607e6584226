#!/usr/bin/env bash
# Smoke test of the docker-compose cluster: brings it up under a throw-away
# project name on a free loopback port (plain `docker-compose up -d`: three
# gateway replicas), waits for every container to be healthy and for HAProxy
# to balance over the three, runs deploy/smoke_client.py (which talks to the
# LB and to each replica, then `docker kill`s the second replica and
# `docker stop`s the third), checks the rest of the cluster is still healthy,
# starts the two again (`docker-compose up -d`) and checks they rejoin, scales
# 3 -> 5 -> 2 with clients connected (smoke_client.py --phase scale), checks
# WebSockets through the LB stay open across a Redis restart and an account
# survives one, and always tears everything down (docker-compose down -v).
# With --sentinel, on the Sentinel topology, the Redis restart is replaced by
# a `docker kill` of the Redis master: the cluster must serve again within 15 s.
#
# Usage: deploy/smoke-test.sh [--sentinel] [--no-cluster] [--override FILE]...
#   --sentinel       add deploy/docker-compose.sentinel.yml (master, replica, 3 Sentinels)
#   --no-cluster     skip the client steps that need Redis clustering
#   --override FILE  an extra compose file on top of docker-compose.yml
# Needs: the images (deploy/build-images.sh), docker-compose, python3.
# Environment: CONCIERGE_PORT (host port for the LB; default: a free one),
#   SMOKE_RECONNECT_DELAY (seconds a client closed with 1012 waits before it
#   reconnects in the scale phase; default 0).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

client_args=()
cluster=1
sentinel=0
compose_files=(-f "$root/docker-compose.yml")
# The services besides gateway that must be healthy.
infra=(redis lb)
while (($#)); do
    case $1 in
        --no-cluster) client_args+=(--no-cluster) cluster=0 ;;
        --sentinel)
            sentinel=1
            compose_files+=(-f "$here/docker-compose.sentinel.yml")
            infra+=(redis-replica sentinel1 sentinel2 sentinel3)
            ;;
        --override)
            [[ -f ${2:-} ]] || { echo "smoke-test: --override needs a compose file" >&2; exit 2; }
            compose_files+=(-f "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")")
            shift
            ;;
        -h | --help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "smoke-test: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

project=concierge-smoke-$$
current="start"
failures=()

step() {
    current=$*
    printf '\n==> %s\n' "$current"
}
fail() {
    printf 'smoke-test: FAILED at step "%s": %s\n' "$current" "$*" >&2
    exit 1
}

compose() {
    docker-compose -p "$project" "${compose_files[@]}" "$@"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((rc != 0)); then
        printf '\nsmoke-test: failed (step "%s"); state and recent logs:\n' "$current" >&2
        compose ps >&2 || true
        compose logs --no-color --tail=30 >&2 || true
    fi
    printf '\n==> tearing down %s\n' "$project"
    compose down -v --remove-orphans --timeout 10 || rc=1
    local left
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
    left+=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
    left+=$(docker network ls -q --filter "label=com.docker.compose.project=$project")
    if [[ -n $left ]]; then
        echo "smoke-test: left behind after teardown: $left" >&2
        rc=1
    fi
    exit "$rc"
}

# The containers of a service, running or not (gateway: one per replica).
containers() { compose ps -q "$1"; }

health_of() { # container -> healthy|unhealthy|starting|exited|...
    docker inspect -f '{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null || echo gone
}

health() { # service -> the health of each of its containers, as NAME=STATUS words
    local id out=()
    for id in $(containers "$1"); do
        out+=("$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}_{{index .Config.Labels "com.docker.compose.container-number"}}' "$id")=$(health_of "$id")")
    done
    ((${#out[@]})) || out=("$1=missing")
    echo "${out[*]}"
}

wait_healthy() { # seconds service... : every container of each service healthy
    local deadline=$((SECONDS + $1)) service word pending
    shift
    while :; do
        pending=()
        for service in "$@"; do
            for word in $(health "$service"); do
                [[ $word == *=healthy ]] || pending+=("$word")
            done
        done
        ((${#pending[@]} == 0)) && return 0
        ((SECONDS < deadline)) || fail "not healthy after the wait: ${pending[*]}"
        sleep 1
    done
}

# HAProxy's stats listener (port 8404 of the lb container, not published).
lb_stats() {
    local ip
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(containers lb)")
    echo "$ip:8404"
}

lb_up() { # the addresses HAProxy balances over (servers UP in backend gateways), sorted
    curl --silent --max-time 3 "http://$(lb_stats)/stats;csv" |
        awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
                 $1 == "gateways" && $2 != "BACKEND" && $(col["status"]) ~ /^UP/ {
                     split($(col["addr"]), a, ":"); print a[1] }' | sort
}

wait_lb_follows() { # seconds: until HAProxy balances over exactly the running replicas
    local deadline=$((SECONDS + $1)) want got
    while :; do
        want=$(for id in $(containers gateway); do
            docker inspect -f '{{if .State.Running}}{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}{{end}}' "$id"
        done | sed '/^$/d' | sort)
        got=$(lb_up)
        [[ -n $want && $got == "$want" ]] && return 0
        ((SECONDS < deadline)) || fail "the LB balances over [${got//$'\n'/ }], not the running replicas [${want//$'\n'/ }]"
        sleep 0.5
    done
}

replica_args=()
collect_replicas() { # --replica gateway_N=IP=CONTAINER for each running replica, by number
    local num id ip running
    replica_args=()
    while read -r num id; do
        read -r running ip < <(docker inspect -f '{{.State.Running}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id")
        [[ $running == true ]] || continue
        [[ -n $ip ]] || fail "gateway_$num has no address"
        replica_args+=(--replica "gateway_$num=$ip=$id")
    done < <(for id in $(containers gateway); do
        docker inspect -f '{{index .Config.Labels "com.docker.compose.container-number"}} {{.Id}}' "$id"
    done | sort -n)
}

step "checking prerequisites"
for tool in docker docker-compose python3 curl; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
for image in concierge/gateway concierge/lb concierge/redis; do
    docker image inspect "$image:latest" >/dev/null 2>&1 ||
        fail "image $image:latest is missing: run deploy/build-images.sh"
done
if [[ -z ${CONCIERGE_PORT:-} ]]; then
    CONCIERGE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
export CONCIERGE_PORT CONCIERGE_HOST_IP=127.0.0.1
lb=127.0.0.1:$CONCIERGE_PORT
echo "project $project, LB on $lb"

trap cleanup EXIT
trap 'exit 130' INT TERM

step "docker-compose up -d"
started=$SECONDS
compose up -d || fail "docker-compose up failed"
count=$(containers gateway | wc -l)
((count == 3)) || fail "docker-compose up -d started $count gateway replicas, not 3 (deploy.replicas)"
echo "3 gateway replicas (deploy.replicas) in $((SECONDS - started)) s"

step "waiting for every container to be healthy and the LB to balance over the 3 replicas"
wait_healthy 90 "${infra[@]}" gateway
echo "healthy after $((SECONDS - started)) s"
wait_lb_follows 20
echo "the LB balances over $(lb_up | paste -sd' ') after $((SECONDS - started)) s"

collect_replicas
kill_name=${replica_args[3]%%=*} stop_name=${replica_args[5]%%=*}

step "LB answers on $lb"
curl --fail --silent --show-error --max-time 5 "http://$lb/readyz" >/dev/null || fail "GET /readyz through the LB"
step "the web console through the LB"
curl --fail --silent --show-error --max-time 5 "http://$lb/console/" | grep -q 'js/main.js' ||
    fail "GET /console/ through the LB"

step "smoke client (deploy/smoke_client.py): everything up to killing $kill_name, stopping $stop_name"
if ! python3 "$here/smoke_client.py" --lb "$lb" "${replica_args[@]}" "${client_args[@]}"; then
    failures+=("smoke client (main phase)")
fi

step "the rest of the cluster is healthy after $kill_name's kill and $stop_name's stop"
echo "gateway: $(health gateway)"
wait_healthy 30 "${infra[@]}"
survivor=${replica_args[1]##*=}
[[ $(health_of "$survivor") == healthy ]] || fail "${replica_args[1]%%=*} is $(health_of "$survivor")"
for i in 1 2 3 4 5; do
    curl --fail --silent --show-error --max-time 5 "http://$lb/readyz" >/dev/null ||
        fail "GET /readyz through the LB (try $i)"
done
wait_lb_follows 10
echo "redis, the last replica and lb healthy; the LB serves, balancing over $(lb_up | paste -sd' ')"

step "docker-compose up -d starts $kill_name and $stop_name again"
before=("${replica_args[@]}")
compose up -d || fail "docker-compose up -d failed"
wait_healthy 60 "${infra[@]}" gateway
collect_replicas
((${#replica_args[@]} == 6)) || fail "after docker-compose up -d: ${replica_args[*]}"
moved=()
for i in "${!replica_args[@]}"; do
    [[ ${replica_args[i]} == "${before[i]}" ]] || moved+=("${before[i]%=*} -> ${replica_args[i]#*=}")
done
((${#moved[@]} == 0)) || echo "replica addresses changed: ${moved[*]} (HAProxy follows them through DNS)"
wait_lb_follows 20
echo "the LB balances over $(lb_up | paste -sd' ')"

step "smoke client: the restarted replicas rejoin"
if ! python3 "$here/smoke_client.py" --phase rejoin --lb "$lb" "${replica_args[@]}" "${client_args[@]}"; then
    failures+=("smoke client (rejoin phase)")
fi

step "smoke client: scaling 3 -> 5 -> 2 with docker-compose up -d --scale gateway=N"
scale_args=(--project "$project" --lb-stats "$(lb_stats)")
for ((i = 1; i < ${#compose_files[@]}; i += 2)); do
    scale_args+=(--compose-file "${compose_files[i]}")
done
if ! python3 "$here/smoke_client.py" --phase scale --lb "$lb" "${scale_args[@]}" "${client_args[@]}"; then
    failures+=("smoke client (scale phase)")
fi
echo "gateway: $(health gateway)"
wait_healthy 30 "${infra[@]}" gateway
wait_lb_follows 10

if ((sentinel == 0)); then
    step "smoke client: WebSockets through the LB across a Redis restart"
    if ! python3 "$here/smoke_client.py" --phase redis --lb "$lb" "${scale_args[@]}" "${client_args[@]}"; then
        failures+=("smoke client (redis phase)")
    fi
    wait_healthy 60 "${infra[@]}" gateway
else
    step "smoke client: docker kill of the Redis master, the Sentinels fail over"
    if ! python3 "$here/smoke_client.py" --phase failover --lb "$lb" "${scale_args[@]}" "${client_args[@]}"; then
        failures+=("smoke client (failover phase)")
    fi
    step "the old master comes back as a replica of the promoted one"
    compose start redis
    deadline=$((SECONDS + 30))
    until role=$(docker exec "$(containers redis)" redis-cli INFO replication 2>/dev/null | tr -d '\r') &&
        [[ $role == *role:slave* && $role == *master_host:redis-replica* && $role == *master_link_status:up* ]]; do
        ((SECONDS < deadline)) || fail "redis is not a replica of redis-replica 30 s after its start: ${role:-no answer}"
        sleep 1
    done
    echo "redis: role:slave, master_host:redis-replica, master_link_status:up"
    wait_healthy 60 "${infra[@]}" gateway
    wait_lb_follows 10
fi

if ((cluster == 0)); then
    echo "[SKIP] an account lives in Redis and survives its restart: --no-cluster"
else
    step "an account lives in Redis and survives its restart"
    # The last step: once an account exists, every client needs a token.
    first=$(containers gateway | head -1)
    printf 'smoke password 1\n' |
        docker exec -i "$first" concierge user add smoke_op --role operator --password-stdin --local ||
        fail "concierge user add inside a gateway replica"
    compose restart redis
    wait_healthy 60 "${infra[@]}" gateway
    deadline=$((SECONDS + 30))
    until answer=$(curl --silent --max-time 5 -H 'Content-Type: application/json' \
            -d '{"username":"smoke_op","password":"smoke password 1"}' "http://$lb/auth/token") &&
        [[ $answer == *'"success":true'* ]]; do
        ((SECONDS < deadline)) || fail "no token for smoke_op after Redis restarted: $answer"
        sleep 1
    done
    echo "smoke_op logs in through the LB after Redis restarted"
fi

if ((${#failures[@]})); then
    current="smoke client"
    fail "$(printf '%s; ' "${failures[@]}")see the FAIL lines above"
fi
step "smoke test passed in $((SECONDS - started)) s"
