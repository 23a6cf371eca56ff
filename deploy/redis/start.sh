#!/bin/sh
# Starts redis-server with one ACL user per service, each allowed only the commands
# and keys it needs. Passwords come from the environment and reach Redis as SHA-256
# hashes in an ACL file on a tmpfs, never on a command line (which every process of
# the host can read).
#
# The default user keeps every permission but gets a random password nobody is
# told: a connection that does not authenticate can run nothing (NOAUTH). It is
# not turned off because Redis replays its append-only file as the default user,
# and before 8.x checks that user's ACL again at each EXEC: with the default user
# off, every MULTI/EXEC of the file (the effects of each script run) would be
# refused at load, losing data silently on a restart.
#
#   auth      login throttle, revocation marks, WebSocket tickets, publishes on the
#             revocation channel (auth:revocations) only
#   backend   users' event streams (read), dispatch, lifecycle, ingest, leases (read),
#             cancel requests, revocation marks (read), tickets (consumed), users'
#             socket leases (+time: scored in Redis' clock, inside a script), follows
#             the revocation channel
#   worker    the run queue, emits into users' streams, leases, cancel requests
#   queuewatch  the run queue's length and pending entries, read only (an autoscaler
#             such as KEDA; made only when REDIS_QUEUEWATCH_PASSWORD is set)
#   health    PING only (the healthcheck; no password, no key)
set -eu

for name in REDIS_AUTH_PASSWORD REDIS_BACKEND_PASSWORD REDIS_WORKER_PASSWORD; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "redis: $name is not set" >&2
    exit 1
  fi
done

hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# commands: connection handshake, data, MULTI, scripts; never admin or keyspace-wide
BASE="-@all +@connection +@read +@write +@transaction +@scripting -@dangerous -scan -randomkey"
ACL=${REDIS_ACL_FILE:-/tmp/users.acl}
umask 077
cat > "$ACL" <<ACL
user default on #$(hash "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')") ~* &* +@all
user health on nopass resetchannels -@all +ping
user auth on #$(hash "$REDIS_AUTH_PASSWORD") resetchannels $BASE +publish ~throttle:* ~revoked:sid:* ~wsticket:* &auth:revocations
user backend on #$(hash "$REDIS_BACKEND_PASSWORD") resetchannels $BASE +@pubsub +time ~u:* ~runs:* ~run:* ~agents:catalog ~analytics:ingest ~analytics:ingest:* ~analytics:dead ~reaper:lock ~worker:alive:* %R~revoked:sid:* ~wsticket:* &u:* &hub:control &runs:cancel &auth:revocations
user worker on #$(hash "$REDIS_WORKER_PASSWORD") resetchannels $BASE +@pubsub ~u:* ~runs:queue ~runs:queue:* ~runs:lifecycle ~runs:lifecycle:* ~run:* ~worker:alive:* ~agents:catalog ~analytics:ingest ~analytics:ingest:* &u:* &runs:cancel
ACL
if [ -n "${REDIS_QUEUEWATCH_PASSWORD:-}" ]; then
  echo "user queuewatch on #$(hash "$REDIS_QUEUEWATCH_PASSWORD") resetchannels -@all +@connection +xinfo +xpending +xlen ~runs:queue ~runs:queue:*" >> "$ACL"
fi
exec redis-server --aclfile "$ACL" "$@"
