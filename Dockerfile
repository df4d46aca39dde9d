# syntax=docker/dockerfile:1
#
# The service image: one image, two processes.
#   web     bin/web     (the default command; gunicorn with gunicorn.conf.py)
#   worker  bin/worker  (python -m analysis.worker)
# and, for local runs only, bin/watcher (the Azurite upload watcher).
#
#   docker build -t openface-base:2.2.0 base-image
#   docker build -t openface-blob-service .
#   docker run -p 8000:8000 --env-file .env openface-blob-service            # web
#   docker run --env-file .env openface-blob-service bin/worker               # worker
#
# docker-compose.yml builds both images in order with one command.

# The OpenFace + Python base (base-image/Dockerfile). Compose passes the image
# it built for its openface-base service; in CI pass a registry tag.
ARG BASE_IMAGE=openface-base:2.2.0
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The service's dependencies live in a virtualenv of the base image's Python,
# apart from that interpreter's own packages. OPENFACE_BIN_DIR is set by the
# base image already; it is repeated here because the service requires it.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    OPENFACE_BIN_DIR=/opt/openface/bin \
    PORT=8000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Requirements first, so a code change does not reinstall them. The function
# app's requirements are installed too: bin/watcher (local runs) imports
# function_trigger, which needs requests, tenacity and azure-functions.
COPY requirements.txt ./
COPY function_trigger/requirements.txt function_trigger/requirements.txt
RUN python -m venv "${VIRTUAL_ENV}" \
 && pip install --no-cache-dir -r requirements.txt -r function_trigger/requirements.txt \
 && pip check

# A fixed, unprivileged user (numeric, so Kubernetes/ACA runAsNonRoot checks work).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app

# The code belongs to root and is read-only to the service user; jobs write
# only under /tmp (TMPDIR).
COPY . .
RUN chmod -R a+rX /app \
 && chmod 0755 bin/* \
 && python -m compileall -q /app/analysis /app/app.py /app/media_rules.py /app/function_trigger

USER 10001:10001
ENV HOME=/tmp \
    TMPDIR=/tmp

EXPOSE 8000

# Liveness of the web process (the worker and watcher have no HTTP server:
# docker-compose.yml disables this check for them; Azure Container Apps uses
# its own probes, see docs/operations.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# Web by default; run `bin/worker` (or `bin/watcher`) for the other processes.
CMD ["bin/web"]
