#!/usr/bin/env bash
# Installs the PostgreSQL server binaries devstack/postgres.py runs (initdb, postgres,
# pg_isready, psql) from the distribution's packages, unless some version is already there.
# Safe to run again; needs root (CI and the dev machines run as root).
set -euo pipefail

if compgen -G '/usr/lib/postgresql/*/bin/initdb' > /dev/null; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# The package also creates the unprivileged `postgres` user the launcher drops to as root.
apt-get install -y --no-install-recommends postgresql
