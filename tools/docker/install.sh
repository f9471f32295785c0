#!/bin/sh
# The build stage of every gridzero image: /opt/gridzero gets one workspace member and exactly
# what it needs, and nothing else.
#   sh tools/docker/install.sh tools               (first: the venv with uv and the backend;
#                                                  the same layer in every image's cache)
#   sh tools/docker/install.sh <distribution>      (then, in /src, the filtered build context)
# uv and the build backend come from tools/build-tools.txt (exact versions, hash-checked);
# every dependency comes from uv.lock (--frozen: the lock as it is; uv checks each file
# against the lock's sha256). The members are built without build isolation by the backend
# installed here, so nothing unpinned is fetched. Afterwards the installer and the backend
# are removed: the image runs the service, it does not install anything.
set -eu
dist=$1
venv=/opt/gridzero
if [ "$dist" = tools ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --require-hashes --only-binary=:all: -r tools/build-tools.txt
  exit 0
fi
UV_PROJECT_ENVIRONMENT=$venv UV_PYTHON_DOWNLOADS=never "$venv/bin/uv" sync --frozen --no-dev \
  --package "$dist" --no-editable --no-build-isolation --inexact --compile-bytecode --link-mode copy
"$venv/bin/gridzero" --version
site=$(echo "$venv"/lib/python3*/site-packages)
rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* "$site"/pkg_resources \
       "$site"/_distutils_hack "$site"/distutils-precedence.pth "$site"/uv "$site"/uv-* \
       "$venv"/bin/pip "$venv"/bin/pip3* "$venv"/bin/uv "$venv"/bin/uvx "$venv"/bin/activate* \
       "$venv"/bin/Activate.ps1
