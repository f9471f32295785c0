# One image for every gridzero service; the command picks the service:
#   docker run --rm gridzero run bms --check
# compose.yaml runs it once per service (and once as root for `gridzero credentials`).
#
# Multi-stage: the build stage installs requirements.lock (every runtime dependency and the
# build backend at an exact version, each file checked against its sha256: --require-hashes)
# and then the package into a venv; nothing unpinned is downloaded. The runtime stage copies
# only that venv (no pip, no setuptools, no compilers, no caches), runs as the non-root user
# 10001 and keeps state in /data.
#
# PYTHON_IMAGE: the base image of both stages. Default: the official python:3.11-slim by
# tag. Pin it by digest for a reproducible build (docs/docker.md, "Pinning the base images"):
#   PYTHON_IMAGE=python:3.11-slim@sha256:<digest>   (in .env, or --build-arg)
# A local stand-in where there is no registry (docs/docker.md). Every dependency has wheels
# for amd64 and arm64 (Raspberry Pi OS 64-bit), so no compiler is needed in the build either.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1
WORKDIR /src
# Dependencies first, in their own layer: a change to the Python sources reuses it.
# Hash mode: a file whose sha256 is not in the lock, or a dependency missing from it, stops
# the build. setuptools (the pinned build backend) comes from the lock too, so the package
# below is built without build isolation: nothing unpinned is fetched.
COPY requirements.lock ./
RUN python3 -m venv /opt/gridzero \
 && /opt/gridzero/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY gridzero ./gridzero
# --no-deps: everything is already there, pinned; `pip check` proves the lock satisfies
# pyproject.toml. Bytecode is compiled now because the venv is read-only for the service
# user and the container's root filesystem is read-only (fast start, fast `gridzero health`).
RUN /opt/gridzero/bin/pip install --no-deps --no-build-isolation --compile . \
 && /opt/gridzero/bin/pip check \
 && /opt/gridzero/bin/python -m compileall -q /opt/gridzero/lib \
 && /opt/gridzero/bin/gridzero --version \
 && rm -rf /opt/gridzero/lib/python3*/site-packages/pip \
           /opt/gridzero/lib/python3*/site-packages/pip-* \
           /opt/gridzero/lib/python3*/site-packages/setuptools \
           /opt/gridzero/lib/python3*/site-packages/setuptools-* \
           /opt/gridzero/lib/python3*/site-packages/pkg_resources \
           /opt/gridzero/lib/python3*/site-packages/_distutils_hack \
           /opt/gridzero/lib/python3*/site-packages/distutils-precedence.pth \
           /opt/gridzero/bin/pip /opt/gridzero/bin/pip3* /opt/gridzero/bin/activate* \
           /opt/gridzero/bin/Activate.ps1

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gridzero" \
      org.opencontainers.image.description="gridzero services: one image, the command picks the service (gridzero run <service>)" \
      org.opencontainers.image.licenses="MIT"
# uid/gid 10001: no clash with host users; compose's `credentials` service writes the
# per-service secrets owned by 10001. Hardware groups (dialout for /dev/ttyUSB*, i2c for
# /dev/i2c-*) are added per service in compose.hardware.yaml by their host's numeric ids.
RUN groupadd --system --gid 10001 gridzero \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin gridzero \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /opt/gridzero /opt/gridzero
ENV PATH=/opt/gridzero/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRIDZERO_DATA_DIR=/data
# numeric, so that runtimes that check "not root" (runAsNonRoot) can verify it
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["gridzero"]
CMD ["--help"]
