#!/usr/bin/env bash
# Smoke test of the docker-compose cluster: brings it up under a throw-away
# project name on a free loopback port, waits for every service to be healthy,
# runs deploy/smoke_client.py (which talks to the LB and to each replica, then
# `docker kill`s gateway2 and `docker stop`s gateway3), checks the rest of the
# cluster is still healthy, starts the two again and checks they rejoin, and
# always tears everything down (docker-compose down -v).
#
# Usage: deploy/smoke-test.sh [--no-cluster] [--override FILE]...
#   --no-cluster     skip the client steps that need Redis clustering
#   --override FILE  an extra compose file on top of docker-compose.yml
# Needs: the images (deploy/build-images.sh), docker-compose, python3.
# Environment: CONCIERGE_PORT (host port for the LB; default: a free one).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

client_args=()
compose_files=(-f "$root/docker-compose.yml")
while (($#)); do
    case $1 in
        --no-cluster) client_args+=(--no-cluster) ;;
        --override)
            [[ -f ${2:-} ]] || { echo "smoke-test: --override needs a compose file" >&2; exit 2; }
            compose_files+=(-f "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")")
            shift
            ;;
        -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "smoke-test: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

project=concierge-smoke-$$
gateways=(gateway1 gateway2 gateway3)
services=(redis "${gateways[@]}" lb)
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

container() { compose ps -q "$1"; }

health() { # service -> healthy|unhealthy|starting|exited|...
    local id
    id=$(container "$1")
    [[ -n $id ]] || { echo missing; return; }
    docker inspect -f '{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo gone
}

wait_healthy() { # seconds service...
    local deadline=$((SECONDS + $1)) service status pending
    shift
    while :; do
        pending=()
        for service in "$@"; do
            status=$(health "$service")
            [[ $status == healthy ]] || pending+=("$service=$status")
        done
        ((${#pending[@]} == 0)) && return 0
        ((SECONDS < deadline)) || fail "not healthy after the wait: ${pending[*]}"
        sleep 1
    done
}

replica_args=()
collect_replicas() { # --replica NAME=IP=CONTAINER for each gateway, as they are now
    local gw id ip
    replica_args=()
    for gw in "${gateways[@]}"; do
        id=$(container "$gw")
        ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id")
        [[ -n $ip ]] || fail "$gw has no address"
        replica_args+=(--replica "$gw=$ip=$id")
    done
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

step "docker-compose up"
started=$SECONDS
# lb waits for the gateways' healthchecks (depends_on: service_healthy).
compose up -d || fail "docker-compose up failed"

step "waiting for every service to be healthy"
wait_healthy 90 "${services[@]}"
echo "healthy after $((SECONDS - started)) s"

collect_replicas

step "LB answers on $lb"
curl --fail --silent --show-error --max-time 5 "http://$lb/readyz" >/dev/null || fail "GET /readyz through the LB"

step "smoke client (deploy/smoke_client.py): everything up to killing gateway2, stopping gateway3"
if ! python3 "$here/smoke_client.py" --lb "$lb" "${replica_args[@]}" "${client_args[@]}"; then
    failures+=("smoke client (main phase)")
fi

step "the rest of the cluster is healthy after gateway2's kill and gateway3's stop"
echo "gateway2: $(health gateway2), gateway3: $(health gateway3)"
wait_healthy 30 redis gateway1 lb
for i in 1 2 3 4 5; do
    curl --fail --silent --show-error --max-time 5 "http://$lb/readyz" >/dev/null ||
        fail "GET /readyz through the LB (try $i)"
done
echo "redis, gateway1 and lb healthy; the LB serves"

step "starting gateway2 and gateway3 again"
compose start gateway2 gateway3
wait_healthy 60 "${services[@]}"
before=("${replica_args[@]}")
collect_replicas
moved=()
for i in "${!replica_args[@]}"; do
    [[ ${replica_args[i]} == "${before[i]}" ]] || moved+=("${before[i]%=*} -> ${replica_args[i]%=*}")
done
if ((${#moved[@]})); then
    # nginx resolved the replicas at start; lb-entrypoint must reload it.
    echo "replica addresses changed (${moved[*]}); waiting for lb to reload nginx"
    deadline=$((SECONDS + 20))
    until compose logs --no-color lb | grep -q 'upstream addresses changed'; do
        ((SECONDS < deadline)) || fail "lb did not reload nginx after the replicas' addresses changed"
        sleep 1
    done
    compose logs --no-color lb | grep 'upstream addresses changed' | tail -1
fi

step "smoke client: the restarted replicas rejoin"
if ! python3 "$here/smoke_client.py" --phase rejoin --lb "$lb" "${replica_args[@]}" "${client_args[@]}"; then
    failures+=("smoke client (rejoin phase)")
fi

step "an account lives in Redis and survives its restart"
# The last step: once an account exists, every client needs a token.
printf 'smoke password 1\n' |
    compose exec -T gateway1 concierge user add smoke_op --role operator --password-stdin ||
    fail "concierge user add inside gateway1"
compose restart redis
wait_healthy 60 "${services[@]}"
deadline=$((SECONDS + 30))
until answer=$(curl --silent --max-time 5 -H 'Content-Type: application/json' \
        -d '{"username":"smoke_op","password":"smoke password 1"}' "http://$lb/auth/token") &&
    [[ $answer == *'"success":true'* ]]; do
    ((SECONDS < deadline)) || fail "no token for smoke_op after Redis restarted: $answer"
    sleep 1
done
echo "smoke_op logs in through the LB after Redis restarted"

if ((${#failures[@]})); then
    current="smoke client"
    fail "$(printf '%s; ' "${failures[@]}")see the FAIL lines above"
fi
step "smoke test passed in $((SECONDS - started)) s"
