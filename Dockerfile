# shipyard's container image: `shipyard` is the entrypoint, `server` the default command.
#
#   docker build -t shipyard:0.1.0 .
#   docker build -t shipyard:0.1.0 --build-arg EXTRAS=postgres,redis,s3,kafka,grpc,lightgbm .
#   docker run --rm -p 8000:8000 -e SHIPYARD_DATABASE_URL=... shipyard:0.1.0
#   docker run --rm --no-healthcheck shipyard:0.1.0 worker
#
# Two stages: the first builds shipyard's wheel and installs it with its extras into a virtual
# environment; the second copies only that environment onto a clean slim Python, so no build
# backend, source tree or pip cache reaches the final image. Every dependency ships wheels for
# linux/amd64 and linux/arm64, so neither stage needs a compiler.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# the optional extras baked in (pyproject.toml): the backends a cluster uses, by default
ARG EXTRAS=postgres,redis,s3,kafka,grpc
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/shipyard \
    && /opt/shipyard/bin/pip install --no-cache-dir --compile ".[${EXTRAS}]" \
    && /opt/shipyard/bin/shipyard --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="shipyard" \
      org.opencontainers.image.description="Take a trained model from the lab to production and keep it healthy there." \
      org.opencontainers.image.licenses="Apache-2.0"
# tini runs as PID 1, passes SIGTERM on and reaps what exits: the kernel ignores a signal PID 1
# has no handler for (the server drains on SIGTERM, the worker finishes the job in hand).
# libgomp1 is the OpenMP runtime LightGBM's wheel links against (the lightgbm extra).
# Versions are not pinned: the base image's Debian release fixes them, and its point
# releases carry security fixes that a pin would hold back.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 shipyard \
    && useradd --system --uid 10001 --gid shipyard --home-dir /var/lib/shipyard \
        --shell /usr/sbin/nologin shipyard \
    && install --directory --owner shipyard --group shipyard /var/lib/shipyard
COPY --from=build /opt/shipyard /opt/shipyard
# SHIPYARD_HOME holds the spool, the artifact cache and scratch space only: a deployment puts
# the metadata in PostgreSQL (SHIPYARD_DATABASE_URL) and artifacts on S3 (SHIPYARD_ARTIFACT_ROOT)
ENV PATH=/opt/shipyard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHIPYARD_HOME=/var/lib/shipyard \
    SHIPYARD_LOG_FORMAT=json
WORKDIR /var/lib/shipyard
USER 10001:10001
EXPOSE 8000
# the server's liveness route; other commands (worker, stream, batch) run with --no-healthcheck
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "shipyard"]
CMD ["server", "--host", "0.0.0.0", "--port", "8000"]
