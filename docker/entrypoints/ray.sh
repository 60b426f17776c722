#!/usr/bin/env bash
# One Ray node per container, kept in the foreground so the container lives exactly as long as Ray does.
#   head    GCS (RAY_GCS_PORT, 6379), dashboard (RAY_DASHBOARD_PORT, 8265), metrics export
#           (RAY_METRICS_EXPORT_PORT, 8080) and Serve; then deploys SERVE_CONFIG
#           with Serve's HTTP proxy on 0.0.0.0:SERVE_HTTP_PORT so other containers reach it
#   worker  joins RAY_HEAD_ADDRESS (host:port) with this container's CPUs/GPUs
#   health  exit 0 when this node's cluster answers (and, on the head, Serve's HTTP proxy): HEALTHCHECK
# Token auth: set RAY_AUTH_MODE=token and the same RAY_AUTH_TOKEN on every node (production compose does).
set -euo pipefail

role="${1:-head}"
metrics_port="${RAY_METRICS_EXPORT_PORT:-8080}"
gcs_port="${RAY_GCS_PORT:-6379}"
dashboard_port="${RAY_DASHBOARD_PORT:-8265}"
common=(--metrics-export-port="${metrics_port}" --disable-usage-stats)
[[ -n "${RAY_TEMP_DIR:-}" ]] && common+=(--temp-dir="${RAY_TEMP_DIR}")
[[ -n "${RAY_NUM_CPUS:-}" ]] && common+=(--num-cpus="${RAY_NUM_CPUS}")
[[ -n "${RAY_NUM_GPUS:-}" ]] && common+=(--num-gpus="${RAY_NUM_GPUS}")

stop_ray() {
    [[ -n "${ray_pid:-}" ]] && kill -TERM "${ray_pid}" 2>/dev/null || true
    wait "${ray_pid}" 2>/dev/null || true
}

deploy_serve_app() {
    local config="$1" dashboard="http://127.0.0.1:${dashboard_port}" rendered
    rendered="$(mktemp --suffix=.yaml)"
    for _ in $(seq 1 90); do
        if python -c "import urllib.request; urllib.request.urlopen('${dashboard}/api/version', timeout=2)" \
            2>/dev/null; then
            break
        fi
        sleep 2
    done
    # The config's http_options are for a single machine; inside compose the proxy must listen on all
    # interfaces, on the port SERVING_URL names.
    python - "${config}" "${rendered}" <<'PY'
import os
import sys

import yaml

with open(sys.argv[1]) as source:
    config = yaml.safe_load(source)
config.setdefault("http_options", {}).update(host="0.0.0.0", port=int(os.environ.get("SERVE_HTTP_PORT", "8000")))
with open(sys.argv[2], "w") as target:
    yaml.safe_dump(config, target, sort_keys=False)
PY
    serve deploy --address "${dashboard}" "${rendered}"
}

case "${role}" in
    head)
        : "${SERVE_CONFIG:?SERVE_CONFIG must name the Serve config file to deploy (cluster/serve-*.yaml)}"
        ray start --head --port="${gcs_port}" --dashboard-host=0.0.0.0 --dashboard-port="${dashboard_port}" \
            "${common[@]}" --block &
        ray_pid=$!
        trap stop_ray TERM INT
        deploy_serve_app "${SERVE_CONFIG}"
        wait "${ray_pid}"
        ;;
    worker)
        : "${RAY_HEAD_ADDRESS:?RAY_HEAD_ADDRESS must name the Ray head (host:6379)}"
        ray start --address="${RAY_HEAD_ADDRESS}" "${common[@]}" --block &
        ray_pid=$!
        trap stop_ray TERM INT
        wait "${ray_pid}"
        ;;
    health)
        if [[ -n "${RAY_HEAD_ADDRESS:-}" ]]; then
            exec ray health-check --address "${RAY_HEAD_ADDRESS}"
        fi
        ray health-check --address "127.0.0.1:${gcs_port}"
        exec python -c "import urllib.request; urllib.request.urlopen(
            'http://127.0.0.1:${SERVE_HTTP_PORT:-8000}/-/healthz', timeout=5)"
        ;;
    *)
        exec "$@"
        ;;
esac
