#!/bin/sh
# Entry point of the API image.
#   serve    (default) optionally migrate (SETU_MIGRATE_ON_START=1), then uvicorn with SETU_WORKERS workers
#   migrate  apply database migrations and exit (`setu database upgrade`); run once per release
#   anything else is executed as given (`setu apps create ...`, `setu keys rotate`, `bash`)
set -eu

# Multi-process Prometheus metrics: every worker writes its files here; stale files from a previous run
# would be summed into the new one, so the directory starts empty.
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    rm -rf "${PROMETHEUS_MULTIPROC_DIR}"
    mkdir -p "${PROMETHEUS_MULTIPROC_DIR}"
fi

require_services() {
    : "${DATABASE_URL:?DATABASE_URL must point at PostgreSQL with pgvector (postgresql://user:password@host:5432/db)}"
    : "${REDIS_URL:?REDIS_URL must point at Redis or Valkey (redis://host:6379/0)}"
}

case "${1:-serve}" in
    migrate)
        require_services
        exec setu database upgrade --no-prompt
        ;;
    serve)
        require_services
        if [ "${SETU_MIGRATE_ON_START:-0}" = "1" ]; then
            setu database upgrade --no-prompt
        fi
        exec uvicorn api.app:create_app --factory \
            --host "${SETU_HOST:-0.0.0.0}" --port "${SETU_PORT:-8000}" \
            --workers "${SETU_WORKERS:-2}" \
            --proxy-headers --forwarded-allow-ips "${SETU_FORWARDED_ALLOW_IPS:-127.0.0.1}" \
            --no-access-log --no-server-header \
            --timeout-keep-alive 75 --timeout-graceful-shutdown 20
        ;;
    *)
        exec "$@"
        ;;
esac
