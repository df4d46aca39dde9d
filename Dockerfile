# syntax=docker/dockerfile:1
#
# The service image: one image, three processes.
#   web      bin/web      (the default command; gunicorn with gunicorn.conf.py)
#   worker   bin/worker   (python -m analysis.worker)
#   watcher  bin/watcher  (local runs only: the Azurite upload watcher)
#
#   bin/build-images                                   # base and service, docker or buildah
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt -t openface-blob-service .
#   docker run -p 8000:8000 --env-file .env openface-blob-service            # web
#   docker run --env-file .env openface-blob-service bin/worker               # worker
#
# docker-compose.yml builds both images in order with one command.

# The OpenFace + Python base (base-image/Dockerfile). Compose passes the image
# it built for its openface-base service; in CI pass a registry tag, or a digest.
ARG BASE_IMAGE=openface-base:2.2.0
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The service's dependencies live in a virtualenv of Debian's Python, apart
# from the system's own packages. OpenFace runs through openface-sandbox as
# the base image's "openface" user (analysis/openface/sandbox.py).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    OPENFACE_BIN_DIR=/opt/openface/bin \
    OPENFACE_SANDBOX=/usr/local/libexec/openface-sandbox \
    PORT=8000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The lock first, so a code change does not reinstall it. It holds the service's
# and the watcher's packages (bin/watcher imports function_trigger), each checked
# against its hash. Behind a proxy that re-signs TLS, pass its CA bundle as the
# build secret "ca" (bin/build-images does); it is not kept in the image.
COPY requirements.lock ./
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -m venv "${VIRTUAL_ENV}" \
 && pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
 && pip check

# A fixed, unprivileged user (numeric, so Kubernetes/ACA runAsNonRoot checks work).
# Only its group may run openface-sandbox, which may change to the "openface" user.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app \
 && chown root:app "${OPENFACE_SANDBOX}" \
 && chmod 0750 "${OPENFACE_SANDBOX}" \
 && setcap cap_setuid,cap_setgid,cap_kill=ep "${OPENFACE_SANDBOX}"

# The code belongs to root and is read-only to the service user; jobs write
# only under /tmp (TMPDIR).
COPY . .
RUN chmod -R a+rX,go-w /app \
 && chmod 0755 bin/* \
 && python3 -m compileall -q /app/analysis /app/app.py /app/media_rules.py /app/function_trigger

USER 10001:10001
ENV HOME=/tmp \
    TMPDIR=/tmp

EXPOSE 8000

# Liveness of the web process (the worker and watcher have no HTTP server:
# docker-compose.yml disables this check for them; Azure Container Apps uses
# its own probes, see docs/operations.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# Web by default; run `bin/worker` (or `bin/watcher`) for the other processes.
CMD ["bin/web"]
