#!/bin/sh
# The runtime stage of every gridzero image: the service user. uid/gid 10001: no clash with
# host users; compose's `credentials` service writes the per-service secrets owned by 10001.
# Hardware groups (dialout for /dev/ttyUSB*, i2c for /dev/i2c-*) are added per service in
# compose.hardware.yaml by their host's numeric ids.
set -eu
groupadd --system --gid 10001 gridzero
useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin gridzero
mkdir -p /data
chown 10001:10001 /data
