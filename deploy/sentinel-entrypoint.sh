#!/bin/sh
# A Redis Sentinel in the concierge/redis image (as /usr/local/bin/concierge-sentinel),
# for deploy/docker-compose.sentinel.yml. Writes /etc/redis/sentinel.conf from the
# environment when the container first starts, then runs redis-server --sentinel on it.
# Sentinel rewrites that file as it learns the topology (the current master, the
# replicas, the other Sentinels): a restarted container keeps what it learned, so
# the file is only written when it is missing.
#
#   SENTINEL_ANNOUNCE            this Sentinel's hostname on the compose network (required)
#   SENTINEL_MASTER_NAME         the name gateways ask for (default concierge)
#   SENTINEL_MASTER_HOST/_PORT   the first master (default redis, 6379)
#   SENTINEL_QUORUM              Sentinels that must agree the master is down (default 2)
#   SENTINEL_DOWN_AFTER_MS       silence before a Sentinel thinks it down (default 2000)
#   SENTINEL_FAILOVER_TIMEOUT_MS (default 5000)
set -eu

conf=/etc/redis/sentinel.conf
: "${SENTINEL_ANNOUNCE:?set SENTINEL_ANNOUNCE to the hostname of this Sentinel}"
name=${SENTINEL_MASTER_NAME:-concierge}

if [ ! -s "$conf" ]; then
    # Hostnames, not addresses: a container that is recreated comes back with
    # another address, and Docker's DNS follows it.
    cat > "$conf" <<CONF
port 26379
bind 0.0.0.0
protected-mode no
dir /var/lib/redis
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SENTINEL_ANNOUNCE
sentinel monitor $name ${SENTINEL_MASTER_HOST:-redis} ${SENTINEL_MASTER_PORT:-6379} ${SENTINEL_QUORUM:-2}
sentinel down-after-milliseconds $name ${SENTINEL_DOWN_AFTER_MS:-2000}
sentinel failover-timeout $name ${SENTINEL_FAILOVER_TIMEOUT_MS:-5000}
sentinel parallel-syncs $name 1
CONF
    echo "concierge-sentinel: wrote $conf (monitoring ${SENTINEL_MASTER_HOST:-redis} as $name)"
else
    echo "concierge-sentinel: keeping $conf (what this Sentinel learned before its restart)"
fi
exec redis-server "$conf" --sentinel
