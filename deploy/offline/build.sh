#!/usr/bin/env bash
# Builds every image the compose stack needs without a container registry:
#
#   agentchat-offline/debian:bookworm   debootstrap (minbase) imported with `docker import`
#   agentchat-offline/python:3.11       Debian's CPython 3.11 (stands in for python:3.11-slim)
#   agentchat-offline/postgres:15       Debian's PostgreSQL (stands in for postgres:17-alpine)
#   agentchat-offline/redis:7           Debian's redis-server 7.0 (for redis:7-alpine)
#   agentchat-offline/clickhouse:chdb   ClickHouse's HTTP interface on chDB (for clickhouse-server)
#   agentchat:local                     the app image, from the Dockerfile, with wheels
#                                       prepared on this host (the containers need no PyPI)
#
# Cached: an image that exists is kept (the app image is rebuilt, from Docker's layer
# cache when nothing changed); the debootstrap tree is kept as a tarball in
# $AGENTCHAT_OFFLINE_CACHE. Needs root (debootstrap) only for the first base image.
# Usage: deploy/offline/build.sh [--rebuild]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/deploy/offline"
CACHE=${AGENTCHAT_OFFLINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentchat-offline}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
SUITE=bookworm
BASE=agentchat-offline/debian:$SUITE
PY=agentchat-offline/python:3.11
REBUILD=${1:-}
started=$SECONDS

step() { printf '==> [%3ss] %s\n' "$((SECONDS - started))" "$*"; }
have() { [ "$REBUILD" != "--rebuild" ] && docker image inspect "$1" > /dev/null 2>&1; }
build() {  # build TAG CONTEXT [docker build args…]
  local tag=$1 context=$2 log="$CACHE/build-${1//[\/:]/-}.log"; shift 2
  docker build --tag "$tag" "$@" "$context" > "$log" 2>&1 \
    || { tail -30 "$log"; echo "error: docker build of $tag failed (log: $log)" >&2; exit 1; }
}

base_image() {
  if have "$BASE"; then step "$BASE: present"; return; fi
  local tarball="$CACHE/debian-$SUITE-minbase.tar"
  if [ ! -s "$tarball" ] || [ "$REBUILD" = "--rebuild" ]; then
    [ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root (run once as root)" >&2; exit 1; }
    if ! command -v debootstrap > /dev/null; then
      step "installing debootstrap (Debian's package)"
      { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap; } \
        > "$CACHE/apt.log" 2>&1 || { tail -20 "$CACHE/apt.log"; exit 1; }
    fi
    step "$BASE: debootstrap $SUITE (minbase; a few minutes, once)"
    local tree
    tree=$(mktemp -d)
    # shellcheck disable=SC2086  # DEBIAN_MIRROR is optional
    debootstrap --variant=minbase "$SUITE" "$tree" ${DEBIAN_MIRROR:-} > "$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; rm -rf "$tree"; exit 1; }
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* "$tree"/debootstrap
    tar -C "$tree" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$tree"
  fi
  step "$BASE: docker import"
  docker import --change 'CMD ["bash"]' "$tarball" "$BASE" > /dev/null
}

wheels() {
  local dir="$ROOT/build/wheels" stamp
  stamp=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
    step "wheels: present ($(find "$dir" -name '*.whl' | wc -l) in build/wheels)"; return
  fi
  step "wheels: pip wheel on this host (the images install from them, offline)"
  rm -rf "$dir" "$ROOT/build/chdb-wheels" && mkdir -p "$dir" "$ROOT/build/chdb-wheels"
  # the app's (its build backend too: the image builds the project itself, offline);
  # chDB's apart, for the ClickHouse stand-in only (it would weigh on the app's context)
  # async-timeout: redis-py needs it below Python 3.11.3 (Debian has 3.11.2; this
  # host's pip resolves for its own Python)
  { "$PYTHON" -m pip wheel --disable-pip-version-check --wheel-dir "$dir" \
      "$ROOT" "setuptools>=68" wheel "async-timeout>=4.0.3" \
    && "$PYTHON" -m pip wheel --disable-pip-version-check \
      --wheel-dir "$ROOT/build/chdb-wheels" chdb; } > "$CACHE/wheels.log" 2>&1 \
    || { tail -20 "$CACHE/wheels.log"; exit 1; }
  rm -f "$dir"/agentchat-*.whl
  echo "$stamp" > "$dir/.stamp"
}

clickhouse_image() {
  local tag=agentchat-offline/clickhouse:chdb context
  context=$(mktemp -d)
  mkdir "$context/wheels"
  cp "$HERE/clickhouse/Dockerfile" "$HERE/clickhouse/server.py" "$context/"
  cp "$ROOT"/build/chdb-wheels/*.whl "$context/wheels/"
  step "$tag"
  build "$tag" "$context" --build-arg "PYTHON_IMAGE=$PY"
  rm -rf "$context"
}

mkdir -p "$CACHE"
base_image
for name in python postgres redis; do
  case $name in
    python) tag=$PY ;; postgres) tag=agentchat-offline/postgres:15 ;; redis) tag=agentchat-offline/redis:7 ;;
  esac
  if have "$tag"; then step "$tag: present"; else
    step "$tag: from Debian's packages"
    build "$tag" "$HERE/$name" --build-arg "BASE_IMAGE=$BASE"
  fi
done
wheels
step "agentchat:local: the app image (layer cache)"
build agentchat:local "$ROOT" --build-arg "PYTHON_IMAGE=$PY" \
  --build-arg "PIP_OPTIONS=--no-index --find-links /wheels"
if have agentchat-offline/clickhouse:chdb; then step "agentchat-offline/clickhouse:chdb: present"
else clickhouse_image; fi
step "images ready"
