-- Read access for Grafana's per-app usage dashboard: the audit trail and the apps' public columns, nothing
-- else (no secrets' hashes, no users, no memories). Idempotent; scripts/deploy applies it after migrations.
-- The role itself (LOGIN, with its password) is created once by docker/postgres/initdb/10-grafana-reader.sh.
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON audit_events TO grafana_reader;
GRANT SELECT (id, name, client_id, status) ON gpt_apps TO grafana_reader;
