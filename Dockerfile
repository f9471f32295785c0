# One image for every gridzero service; the command picks the service:
#   docker run gridzero run bms
# Multi-stage: the build stage installs the pinned dependencies into a venv,
# the runtime stage copies only that venv (no compilers, no pip cache), runs
# as a non-root user and keeps state in /data.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gridzero ./gridzero
RUN python3 -m venv /opt/gridzero \
 && /opt/gridzero/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt . \
 && find /opt/gridzero -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/gridzero/lib/python3*/site-packages/pip*

FROM ${PYTHON_IMAGE}
# uid 10001: no clash with host users; groups for the hardware a service may be given
# (dialout for /dev/ttyUSB*, i2c for /dev/i2c-*; the numeric ids are set per host in compose)
RUN groupadd --system --gid 10001 gridzero \
 && useradd --system --uid 10001 --gid gridzero --home-dir /data --no-create-home --shell /usr/sbin/nologin gridzero \
 && mkdir -p /data && chown gridzero:gridzero /data
COPY --from=build /opt/gridzero /opt/gridzero
ENV PATH=/opt/gridzero/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRIDZERO_DATA_DIR=/data
USER gridzero
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["gridzero"]
CMD ["--help"]
