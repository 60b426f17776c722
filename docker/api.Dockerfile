# syntax=docker/dockerfile:1.7
# The ShikshaSetu API image: Litestar under uvicorn with SETU_WORKERS worker processes, CPU-only torch.
# Build from the repository root:  docker build -f docker/api.Dockerfile -t shikshasetu-api .
# The same image runs the development Ray head (docker/compose.yaml), since it carries the `serving` extra.

ARG PYTHON_VERSION=3.11

# ---- build: a virtual environment with every dependency, in its own layer -------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# CPU torch from PyTorch's CPU index, pinned as in pyproject's `cpu` extra (PyPI's build drags in CUDA);
# its own layer, so a change of our dependencies does not download it again.
# hadolint ignore=DL3059
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /app
# Dependencies first (cached until pyproject.toml changes): install against empty packages, then the code.
COPY pyproject.toml README.md ./
RUN mkdir api serving && touch api/__init__.py serving/__init__.py \
 && pip install --extra-index-url https://download.pytorch.org/whl/cpu --editable '.[cpu,serving]'
COPY api ./api
COPY serving ./serving
COPY migrations ./migrations
COPY cluster ./cluster
COPY docker/entrypoints ./docker/entrypoints

# ---- runtime: the venv and the code, no compilers, a non-root user --------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG SETU_UID=10001
# The data directory and the model cache exist (owned by setu) before compose mounts volumes on them, so the
# volumes start out writable by the non-root user.
RUN groupadd --system --gid "${SETU_UID}" setu \
 && useradd --system --uid "${SETU_UID}" --gid setu --home-dir /var/lib/shikshasetu --create-home \
      --shell /usr/sbin/nologin setu \
 && install -d -o setu -g setu /var/lib/shikshasetu/huggingface
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SETU_ENV=production \
    SETU_HOST=0.0.0.0 \
    SETU_PORT=8000 \
    SETU_WORKERS=2 \
    SETU_LOG_JSON=true \
    SETU_DATA_DIR=/var/lib/shikshasetu \
    HF_HOME=/var/lib/shikshasetu/huggingface \
    PROMETHEUS_MULTIPROC_DIR=/tmp/setu-metrics
USER ${SETU_UID}:${SETU_UID}
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SETU_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["/app/docker/entrypoints/api.sh"]
CMD ["serve"]
