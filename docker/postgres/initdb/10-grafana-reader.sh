#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised (the image's /docker-entrypoint-initdb.d):
# creates the login role Grafana reads with. Its grants come after the tables exist: grafana-reader.sql.
set -eu
: "${GRAFANA_DB_PASSWORD:?GRAFANA_DB_PASSWORD is required}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="$GRAFANA_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE grafana_reader LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader')
\gexec
ALTER ROLE grafana_reader WITH LOGIN PASSWORD :'password' CONNECTION LIMIT 8;
SQL
