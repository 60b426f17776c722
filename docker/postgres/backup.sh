#!/bin/sh
# PostgreSQL backups of the ShikshaSetu database (pg_dump custom format), used by the `pg-backup` service of
# docker/compose.prod.yaml and by scripts/deploy.
#   backup.sh once [LABEL]     one dump now, checked readable, written atomically; prints its path
#   backup.sh schedule         a dump every BACKUP_INTERVAL_SECONDS (default 21600 = 6 h), until stopped
#   backup.sh restore FILE     replace the database's contents with FILE (stop the API and workers first)
# Connection: DATABASE_URL, else libpq's PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE.
# BACKUP_DIR (default /backups) keeps dumps for BACKUP_KEEP_DAYS days (default 14).
set -eu

backup_dir="${BACKUP_DIR:-/backups}"
keep_days="${BACKUP_KEEP_DAYS:-14}"

dump_once() {
    label="${1:-manual}"
    case "$label" in *[!A-Za-z0-9_.-]*) echo "backup.sh: a label is letters, digits, ., - and _" >&2; exit 2 ;; esac
    mkdir -p "$backup_dir"
    target="$backup_dir/shikshasetu-$(date -u +%Y%m%dT%H%M%SZ)-$label.dump"
    pg_dump --format=custom --no-owner --no-privileges ${DATABASE_URL:+"--dbname=$DATABASE_URL"} \
        --file="$target.partial"
    pg_restore --list "$target.partial" >/dev/null
    mv "$target.partial" "$target"
    find "$backup_dir" -name 'shikshasetu-*.dump' -mtime +"$keep_days" -exec rm -f {} +
    echo "$target"
}

case "${1:-}" in
    once)
        dump_once "${2:-manual}"
        ;;
    schedule)
        interval="${BACKUP_INTERVAL_SECONDS:-21600}"
        echo "backup.sh: a dump every ${interval} s into ${backup_dir}, kept ${keep_days} days"
        trap 'exit 0' TERM INT
        while :; do
            dump_once scheduled || echo "backup.sh: backup failed; next try in ${interval} s" >&2
            sleep "$interval" &
            wait $!
        done
        ;;
    restore)
        file="${2:?usage: backup.sh restore FILE}"
        pg_restore --list "$file" >/dev/null
        pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction --exit-on-error \
            --dbname="${DATABASE_URL:-${PGDATABASE:?set DATABASE_URL or PGDATABASE}}" "$file"
        echo "restored $file"
        ;;
    *)
        echo "usage: backup.sh once [LABEL] | schedule | restore FILE" >&2
        exit 2
        ;;
esac
