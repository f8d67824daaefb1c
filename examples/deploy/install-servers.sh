#!/usr/bin/env bash
# Install the real servers the production suite (tests/production/) and bench/nginx_overhead.py
# run: Debian's postgresql (15), redis-server, nginx and openssl, each only when missing.
# Run as root (CI does, through .ci/run). Nothing is started or enabled: the suite starts the
# binaries itself, in temporary directories, on loopback ports.
#   sudo examples/deploy/install-servers.sh          install what is missing
#   examples/deploy/install-servers.sh --check       say what is missing; exit 1 if anything is
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
missing=()
[ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || missing+=(postgresql)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null || missing+=(openssl)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-servers: postgresql 15, redis-server, nginx and openssl are present"
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    echo "install-servers: missing: ${missing[*]}"
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-servers: missing ${missing[*]}; run this script as root (sudo $0)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "install-servers: missing ${missing[*]}, and this is not a Debian system (no apt-get):" \
        "install PostgreSQL 15, Redis, nginx and openssl yourself" >&2
    exit 1
fi

echo "install-servers: installing ${missing[*]}"
# The packages' scripts would start their services: not here (no systemd; the suite starts
# its own servers). policy-rc.d answering 101 tells invoke-rc.d not to start anything.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-servers: installed ${missing[*]}"
