#!/bin/sh
# agentchat's Postgres roles, created at the database's first initialisation: the
# postgres image's entrypoint runs (or sources) this file from
# /docker-entrypoint-initdb.d/ as the superuser POSTGRES_USER, on POSTGRES_DB.
# The statements are in roles.psql beside it (the entrypoint ignores *.psql files);
# the passwords come from the environment and reach psql as variables, which psql
# quotes itself.
#
#   AGENTCHAT_OWNER_PASSWORD  agentchat: owns schemas auth and app, runs migrations
#   AGENTCHAT_AUTH_PASSWORD   agentchat_auth: the auth service
#   AGENTCHAT_APP_PASSWORD    agentchat_app: the backend
#
# POSIX sh; in a subshell, so that when sourced nothing leaks into the entrypoint.
(
    set -eu
    me=10-roles.sh
    for name in AGENTCHAT_OWNER_PASSWORD AGENTCHAT_AUTH_PASSWORD AGENTCHAT_APP_PASSWORD; do
        eval "value=\${$name:-}"
        if [ -z "$value" ]; then
            echo "$me: $name is not set: each agentchat role needs a password" >&2
            exit 1
        fi
    done
    sql="$(dirname -- "$0")/roles.psql"
    if [ ! -f "$sql" ]; then
        sql=/docker-entrypoint-initdb.d/roles.psql  # sourced: $0 is the entrypoint
    fi
    echo "$me: creating the agentchat roles from $sql"
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
        --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
        -v owner_password="$AGENTCHAT_OWNER_PASSWORD" \
        -v auth_password="$AGENTCHAT_AUTH_PASSWORD" \
        -v app_password="$AGENTCHAT_APP_PASSWORD" \
        --file "$sql"
) || exit 1
